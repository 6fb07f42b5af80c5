fn main() -> std::process::ExitCode {
    pv::cli::main()
}
