//! What this CPU can run, detected once. Every SIMD choice in pv reads it: the kernel
//! tables (by [`Isa`]) and the element-wise helpers elsewhere (by [`Cpu`] feature).
//!
//! A function compiled for a feature (`#[target_feature(enable = ...)] unsafe fn`) is only
//! ever called after [`cpu()`] said the feature is there; that is the one safety argument
//! every `unsafe` call of a SIMD function in pv rests on.

use std::sync::OnceLock;

/// The instruction-set features pv's SIMD code uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cpu {
    /// AVX2 with FMA and F16C: the 256-bit kernels.
    pub avx2: bool,
    /// FMA alone (the contractions GCC makes in llama.cpp's element-wise code).
    pub fma: bool,
    /// AVX with F16C (f16 conversion of eight values at once).
    pub f16c: bool,
    /// AVX-512 F, BW, VL and VNNI (with AVX2): the 512-bit tiles, and `vpdpbusd` on
    /// 256-bit vectors with 32 registers.
    pub avx512_vnni: bool,
    /// AVX-VNNI (with AVX2): `vpdpbusd` on 256-bit vectors.
    pub avx_vnni: bool,
    /// AVX-512 executed at full width (every AVX-512 CPU but AMD's Zen 4, which runs a
    /// 512-bit operation as two 256-bit halves): a property of the core, not an instruction
    /// set. It picks [`Isa::Avx512VnniWide`] over [`Isa::Avx512Vnni`] as the best table.
    pub zmm_full: bool,
}

/// The features of the CPU this process runs on, detected on the first call, less those
/// above the ceiling `PV_CPU` names ([`ceiling`]).
pub fn cpu() -> Cpu {
    static CPU: OnceLock<Cpu> = OnceLock::new();
    *CPU.get_or_init(|| {
        let found = detect();
        match std::env::var("PV_CPU") {
            Ok(name) => ceiling(found, &name),
            Err(_) => found,
        }
    })
}

/// `found` with every feature above the instruction set `name` turned off, so that pv on
/// an AVX-512 machine runs as it would on a CPU without it: `portable`, `avx2`, `avx-vnni`,
/// `avx512-half` (AVX-512 as a core that splits 512-bit operations in two runs it: the
/// tables of Zen 4) or `avx512` (what the CPU has; an unknown name leaves it as found and
/// says so). A ceiling only removes features, so the safety argument of [`cpu()`] is
/// unchanged.
pub fn ceiling(found: Cpu, name: &str) -> Cpu {
    let mut c = found;
    match name {
        "portable" => c = Cpu::default(),
        "avx2" => {
            c.avx512_vnni = false;
            c.avx_vnni = false;
            c.zmm_full = false;
        }
        "avx-vnni" => {
            c.avx512_vnni = false;
            c.zmm_full = false;
        }
        "avx512-half" => c.zmm_full = false,
        "avx512" => {}
        other => eprintln!(
            "warning: PV_CPU={other:?} is not portable, avx2, avx-vnni, avx512-half or avx512; ignored"
        ),
    }
    c
}

#[cfg(target_arch = "x86_64")]
fn detect() -> Cpu {
    use std::is_x86_feature_detected as has;
    let avx2 = has!("avx2") && has!("fma") && has!("f16c");
    let avx512_vnni =
        avx2 && has!("avx512f") && has!("avx512bw") && has!("avx512vl") && has!("avx512vnni");
    Cpu {
        avx2,
        fma: has!("fma"),
        f16c: has!("avx") && has!("f16c"),
        avx512_vnni,
        avx_vnni: avx2 && has!("avxvnni"),
        zmm_full: avx512_vnni && !zen4(),
    }
}

/// Whether this is an AMD family 19h core (Zen 3 and Zen 4; of those only Zen 4 has
/// AVX-512, and it runs each 512-bit operation as two 256-bit halves).
#[cfg(target_arch = "x86_64")]
fn zen4() -> bool {
    use std::arch::x86_64::__cpuid;
    let (vendor, sig) = (__cpuid(0), __cpuid(1));
    // "AuthenticAMD", in the order CPUID gives it: EBX, EDX, ECX.
    let amd = (vendor.ebx, vendor.edx, vendor.ecx) == (0x6874_7541, 0x6974_6e65, 0x444d_4163);
    // The family: the base field (bits 8-11), plus the extended field (bits 20-27) at 15.
    let base = (sig.eax >> 8) & 0xf;
    let family = if base == 0xf {
        base + ((sig.eax >> 20) & 0xff)
    } else {
        base
    };
    amd && family == 0x19
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> Cpu {
    Cpu::default()
}

/// Defines `$name`, which runs `$imp` (an `#[inline(always)]` function) compiled for
/// `$features` when [`cpu()`] reports `$flag`, and its portable build otherwise: the way
/// pv speeds up plain Rust (wider vectors, one instruction per `mul_add`) without
/// intrinsics. Both builds perform the same float operations in the same order, so they
/// give the same bits; the caller's doc says why for its function.
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($a:ident: $t:ty),* $(,)?) $(-> $r:ty)?
        = $imp:ident if $flag:ident($features:literal)) => {
        $(#[$m])*
        $vis fn $name($($a: $t),*) $(-> $r)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = $features)]
                unsafe fn fast($($a: $t),*) $(-> $r)? {
                    $imp($($a),*)
                }
                if $crate::quant::cpu().$flag {
                    // SAFETY: `cpu()` detected the features `fast` is compiled for.
                    return unsafe { fast($($a),*) };
                }
            }
            $imp($($a),*)
        }
    };
}
pub(crate) use multiversion;

/// An instruction set with its own table of kernels (`quant::kernels`). Sets above
/// [`Isa::Portable`] compute the same bits as the portable code; the choice changes speed,
/// never results (property-tested).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Portable Rust, the reference every other set is tested against.
    Portable,
    /// AVX2 + FMA + F16C.
    Avx2,
    /// AVX2, with AVX-VNNI (`vpdpbusd`, VEX) for the 32-value formats' tiles.
    AvxVnni,
    /// AVX2, with AVX-512 VNNI kernels: the 32-value formats' tiles with one output per
    /// 256-bit register (32 of them), the repacked and tiled K-quant tiles, the sixteen-row
    /// generation kernels. The best table where 512-bit operations run as two halves.
    Avx512Vnni,
    /// [`Isa::Avx512Vnni`] with the 32-value formats' tiles two outputs per 512-bit
    /// register: the same instructions, the best table where they run at full width
    /// ([`Cpu::zmm_full`]).
    Avx512VnniWide,
}

impl Isa {
    /// Every set, portable first.
    pub const ALL: [Isa; 5] = [
        Isa::Portable,
        Isa::Avx2,
        Isa::AvxVnni,
        Isa::Avx512Vnni,
        Isa::Avx512VnniWide,
    ];

    /// Whether this CPU runs the set.
    pub fn is_available(self) -> bool {
        let c = cpu();
        match self {
            Isa::Portable => true,
            Isa::Avx2 => c.avx2,
            Isa::AvxVnni => c.avx_vnni,
            Isa::Avx512Vnni | Isa::Avx512VnniWide => c.avx512_vnni,
        }
    }

    /// The sets this CPU runs, portable first (for tests and benchmarks).
    pub fn available() -> Vec<Isa> {
        Isa::ALL.into_iter().filter(|i| i.is_available()).collect()
    }

    /// The fastest set this CPU runs, as measured on CPUs with all of them (`cargo bench
    /// --bench kernels -- tile`): AVX-512 VNNI (its wide table where 512-bit operations run
    /// at full width), then AVX-VNNI, then AVX2.
    pub fn best() -> Isa {
        let wide = cpu().zmm_full;
        *Isa::available()
            .iter()
            .rfind(|&&i| wide || i != Isa::Avx512VnniWide)
            .expect("the portable set always runs")
    }

    /// Lower-case name, as `pv bench` prints it.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2",
            Isa::AvxVnni => "avx-vnni",
            Isa::Avx512Vnni => "avx512-vnni",
            Isa::Avx512VnniWide => "avx512-vnni-wide",
        }
    }
}

/// Asks for every cache line of `bytes` to be brought into the L2 cache, and returns at
/// once: a hint, which changes no result and never faults. The tile kernels read four
/// weight rows, then spend the whole batch's arithmetic on them; prefetching the next four
/// while they do keeps their first reads from waiting on memory (the hardware prefetcher
/// does not reach across that gap).
pub fn prefetch_l2(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    for line in bytes.chunks(64) {
        // SAFETY: SSE (baseline on x86-64); a prefetch of an address inside a live slice
        // reads nothing the program sees.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(
                line.as_ptr() as *const i8
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: Cpu = Cpu {
        avx2: true,
        fma: true,
        f16c: true,
        avx512_vnni: true,
        avx_vnni: true,
        zmm_full: true,
    };

    /// `PV_CPU` only ever removes features, each name down to its own set.
    #[test]
    fn a_ceiling_removes_the_sets_above_it() {
        assert_eq!(ceiling(ALL, "avx512"), ALL);
        let half = ceiling(ALL, "avx512-half");
        assert!(half.avx512_vnni && half.avx_vnni && !half.zmm_full);
        let vnni = ceiling(ALL, "avx-vnni");
        assert!(vnni.avx_vnni && vnni.avx2 && !vnni.avx512_vnni && !vnni.zmm_full);
        let avx2 = ceiling(ALL, "avx2");
        assert!(avx2.avx2 && avx2.fma && avx2.f16c && !avx2.avx_vnni && !avx2.avx512_vnni);
        assert!(!avx2.zmm_full);
        assert_eq!(ceiling(ALL, "portable"), Cpu::default());
        assert_eq!(ceiling(ALL, "sse9"), ALL, "an unknown name changes nothing");
        let none = Cpu::default();
        for name in ["avx512", "avx512-half", "avx-vnni", "avx2", "portable"] {
            assert_eq!(ceiling(none, name), none, "{name} adds nothing");
        }
    }
}
