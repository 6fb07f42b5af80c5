#!/usr/bin/env python3
"""The calibration and held-out prompt corpora of the parity contracts' limits.

  scripts/prompt-corpus.py OUT_DIR

Writes OUT_DIR/corpus-calibration.txt and OUT_DIR/corpus-heldout.txt (one prompt a line,
`\\n` for a newline inside one; pv's prompt-file format). Deterministic (seed 26): prose
from this repository's README, code windows from its Rust, Python, shell and C++ sources,
generated SQL, logs, JSON and numbers, sentences in thirty-odd languages and scripts, chat
markup of both model families, edge cases (repetition, whitespace, a lone character,
emoji), a few prompts longer than Gemma 3's 512-token sliding window, and prompts of one to a
dozen tokens. Every category is
shuffled and dealt two to calibration, one to held-out, so the two sets share no prompt but
cover the same kinds of text. The committed files are the record; this script says how they
were made (prose and code windows are cut from the tree as it was at 8d8c1db, so the script
run on a later tree writes other ones; the short prompts come last and depend on nothing).
"""
import glob
import json
import os
import random
import sys

out = sys.argv[1]
rng = random.Random(26)
root = os.path.join(os.path.dirname(__file__), "..")


def read(p):
    return open(os.path.join(root, p), encoding="utf-8").read()


SENTENCES = [
    "Le train de nuit pour Marseille part à vingt-deux heures précises.",
    "Die Brücke wurde nach dem Hochwasser im Frühjahr vollständig erneuert.",
    "El mercado abre temprano y las naranjas llegan directamente del campo.",
    "La biblioteca comunale resterà chiusa per lavori fino a settembre.",
    "O navio atracou no porto de Lisboa depois de uma longa travessia.",
    "De fietsenmaker op de hoek repareert ook oude naaimachines.",
    "W sobotę w parku odbędzie się koncert muzyki klasycznej.",
    "Na náměstí se každý čtvrtek konají farmářské trhy.",
    "Вечером над рекой поднялся густой туман, и город исчез.",
    "Учні зібралися біля школи, щоб посадити нові дерева.",
    "Το μουσείο της πόλης εκθέτει αγγεία από την κλασική εποχή.",
    "Kütüphanedeki eski haritalar dijital arşive aktarıldı.",
    "افتتحت المدينة حديقة جديدة بالقرب من النهر في الربيع.",
    "הרכבת לירושלים יוצאת כל חצי שעה מהתחנה המרכזית.",
    "کتابخانه ملی مجموعه‌ای از نسخه‌های خطی قدیمی را به نمایش گذاشت.",
    "बारिश के बाद पहाड़ों की हवा बहुत ताज़ा हो जाती है।",
    "নদীর ধারে ছোট একটি চায়ের দোকান সারা রাত খোলা থাকে।",
    "கோவிலின் திருவிழாவில் ஆயிரக்கணக்கான மக்கள் கலந்து கொண்டனர்.",
    "ตลาดน้ำเปิดตั้งแต่เช้ามืดและมีผลไม้สดมากมาย",
    "Con thuyền nhỏ trôi chậm trên dòng sông vào buổi sáng.",
    "Para nelayan kembali ke pantai sebelum matahari terbenam.",
    "这座古老的石桥已经有八百多年的历史了。",
    "這家茶館每天早上都坐滿了看報紙的老人。",
    "駅前の本屋は夜の十時まで開いています。",
    "비가 그친 뒤 하늘에 커다란 무지개가 떴다.",
    "Wanafunzi walitembelea hifadhi ya taifa kuona tembo.",
    "Järven jää sulaa yleensä toukokuun alussa.",
    "A könyvtár új olvasóterme a folyóra néz.",
    "Fjällstugan ligger tre timmars vandring från närmaste väg.",
    "მთის სოფელში ზამთარი ადრე იწყება.",
    "Երևանի շուկայում վաճառում են թարմ ծիրան։",
    "በከተማው መሃል አዲስ ቤተ መጻሕፍት ተከፈተ።",
    "Ein Glas Wasser, bitte — und die Rechnung.",
    "¿Dónde está la estación de autobuses más cercana?",
]


def words_of(text):
    return [w for w in text.split() if w.isalpha()]


def prose():
    paras = [p.strip() for p in read("README.md").split("\n\n")]
    paras = [p for p in paras if len(p) > 200 and not p.startswith(("|", "    ", "```", "#"))]
    return [p[:rng.randint(150, 700)] for p in rng.sample(paras, min(30, len(paras)))]


def code():
    files = (
        glob.glob(os.path.join(root, "src/**/*.rs"), recursive=True)
        + glob.glob(os.path.join(root, "scripts/*.py"))
        + glob.glob(os.path.join(root, "scripts/*.sh"))
        + glob.glob(os.path.join(root, "engines/llamacpp/*.cpp"))
    )
    files.sort()
    out = []
    for _ in range(66):
        lines = open(rng.choice(files), encoding="utf-8").read().splitlines()
        n = rng.randint(4, 30)
        s = rng.randint(0, max(0, len(lines) - n))
        out.append("\n".join(lines[s : s + n]))
    return out


def sql():
    tables = ["orders", "customers", "readings", "invoices", "users", "shipments", "events"]
    cols = ["id", "name", "created_at", "amount", "status", "region", "value", "sensor"]
    out = []
    for _ in range(25):
        t, c = rng.choice(tables), rng.sample(cols, 3)
        k = rng.randrange(4)
        if k == 0:
            out.append(f"SELECT {', '.join(c)} FROM {t} WHERE {c[0]} > {rng.randint(1, 999)} ORDER BY {c[1]} DESC LIMIT {rng.randint(5, 50)};")
        elif k == 1:
            vals = ", ".join(f"({rng.randint(1, 9999)}, '{rng.choice(words_of(SENTENCES[0]))}', {rng.uniform(0, 500):.2f})" for _ in range(rng.randint(2, 6)))
            out.append(f"INSERT INTO {t} ({', '.join(c)}) VALUES {vals};")
        elif k == 2:
            out.append(f"CREATE TABLE {t} (\n  {c[0]} INTEGER PRIMARY KEY,\n  {c[1]} TEXT NOT NULL,\n  {c[2]} REAL DEFAULT 0\n);")
        else:
            out.append(f"SELECT {c[0]}, COUNT(*) AS n, AVG({c[1]}) FROM {t} JOIN {rng.choice(tables)} USING ({c[2]}) GROUP BY {c[0]} HAVING n > {rng.randint(2, 20)};")
    return out


def logs():
    out = []
    for _ in range(20):
        lines = []
        for _ in range(rng.randint(2, 10)):
            lines.append(
                f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d} "
                f"{rng.choice(['INFO', 'WARN', 'ERROR', 'DEBUG'])} [{rng.choice(['http', 'db', 'cache', 'auth'])}] "
                f"{rng.choice(['request served', 'retrying', 'connection reset by peer', 'slow query', 'token expired'])} "
                f"id={rng.randint(10**5, 10**6)} took={rng.uniform(0.1, 2000):.1f}ms"
            )
        out.append("\n".join(lines))
    return out


def jsons():
    out = []
    for _ in range(25):
        obj = {
            "id": rng.randint(1, 10**6),
            "name": rng.choice(words_of(" ".join(SENTENCES[:8])) or ["x"]),
            "tags": rng.sample(["alpha", "beta", "prod", "eu-west", "v2", "cpu", "gpu"], rng.randint(0, 4)),
            "score": round(rng.uniform(-5, 5), 4),
            "active": rng.random() < 0.5,
            "nested": {"depth": rng.randint(1, 5), "items": [rng.randint(0, 99) for _ in range(rng.randint(0, 6))]},
        }
        out.append(json.dumps(obj, ensure_ascii=False, indent=rng.choice([None, 2])))
    return out


def numbers():
    out = []
    for _ in range(25):
        k = rng.randrange(5)
        if k == 0:
            a = rng.randint(1, 9)
            out.append(", ".join(str(a * i * i) for i in range(1, rng.randint(6, 20))) + ",")
        elif k == 1:
            out.append(f"{rng.randint(100, 99999)} * {rng.randint(2, 999)} = ")
        elif k == 2:
            out.append("\n".join(" | ".join(f"{rng.uniform(-100, 100):8.3f}" for _ in range(4)) for _ in range(rng.randint(2, 6))))
        elif k == 3:
            out.append(" ".join(f"0x{rng.randint(0, 2**32):08x}" for _ in range(rng.randint(3, 12))))
        else:
            out.append(f"On {rng.randint(1, 28)}/{rng.randint(1, 12)}/{rng.randint(1900, 2030)} the total was {rng.uniform(0, 1e6):,.2f} EUR and")
    return out


def languages():
    out = list(SENTENCES)
    for _ in range(26):
        out.append(" ".join(rng.sample(SENTENCES, rng.randint(2, 4))))
    return out


def chats():
    out = []
    for _ in range(30):
        user = rng.choice(SENTENCES + prose()[:3])
        if rng.random() < 0.5:
            out.append(f"<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n")
        else:
            out.append(f"<start_of_turn>user\n{user}<end_of_turn>\n<start_of_turn>model\n")
    return out


def edges():
    return [
        "a",
        "?",
        "the the the the the the the the the the the the the the the the",
        "1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1",
        "    indented    with    many    spaces    ",
        "tab\tseparated\tvalues\tin\ta\trow",
        "\n\nleading newlines",
        "🙂🙃😉 emoji 👍🏽 with modifiers 👨‍👩‍👧",
        "Supercalifragilisticexpialidocious antidisestablishmentarianism",
        "!!!???...,,,;;;:::",
        "ALL CAPS SENTENCE ABOUT THE WEATHER TODAY",
        "https://example.org/path?query=1&other=two#fragment",
        "user@example.com wrote: > quoted text > more",
        "∀x ∈ ℝ: x² ≥ 0 ∧ √(x²) = |x|",
        "naïve café résumé coöperate façade",
        "ÀÉÎÕÜ àéîõü ÇçÑñ",
        "~/.config/pv/keys/pv-dev-4.key",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "-- -- -- == == == ** ** **",
        "Mixed 中文 and English and русский in one line.",
    ]


def longs():
    readme = read("README.md")
    out = []
    for _ in range(9):
        s = rng.randint(0, len(readme) - 4000)
        out.append(readme[s : s + rng.randint(2600, 3000)])
    return out


def shorts():
    # One to a dozen tokens: a short prompt's deviations spread far wider than a long one's
    # (fewer values per statistic), so the limits must see many of them.
    fixed = [
        "Hi", "Hello!", "Why?", "OK", "yes", "no.", "x", "7", "42", "3.14159", "1e-6", "-1",
        "2+2=", "fn main() {", "SELECT *", "import os", "</div>", "{}", "[1, 2, 3]", "#!/bin/sh",
        "Thanks!", "Good morning", "What is love?", "Translate: cat", "Bonjour", "¿Qué?",
        "Danke schön", "Привет", "你好", "こんにちは", "안녕하세요", "مرحبا", "नमस्ते", "🙂",
        "...", "\n", "TODO:", "Dear Sir,", "Once upon a time", "<|im_start|>user\nHi<|im_end|>\n",
        "<start_of_turn>user\nHi<end_of_turn>\n",
    ]
    r = random.Random(2626)
    words = [w for s in SENTENCES for w in s.split()[: r.randint(1, 3)]]
    return fixed + [" ".join(r.sample(words, r.randint(1, 3))) for _ in range(19)]


cal, held = [], []
for make in [prose, code, sql, logs, jsons, numbers, languages, chats, edges, longs]:
    items = [p for p in make() if p.strip()]
    rng.shuffle(items)
    for i, p in enumerate(items):
        (held if i % 3 == 2 else cal).append(p)
# Added later, with a generator of its own, and appended: the prompts above depend on the
# README and sources of the tree they were made from (8d8c1db), these on nothing.
items = [p for p in shorts() if p.strip()]
random.Random(2627).shuffle(items)
for i, p in enumerate(items):
    (held if i % 3 == 2 else cal).append(p)


def write(path, prompts):
    with open(path, "w", encoding="utf-8") as f:
        f.write("# written by scripts/prompt-corpus.py (seed 26); one prompt a line, \\n inside one\n")
        for p in prompts:
            # pv reads `\n` as a newline and skips lines starting with `#`: a literal `\n` in
            # code becomes a newline, and a prompt starting with `#` gets a space before it.
            line = p.replace("\n", "\\n")
            f.write((" " + line if line.startswith("#") else line) + "\n")


write(os.path.join(out, "corpus-calibration.txt"), cal)
write(os.path.join(out, "corpus-heldout.txt"), held)
print(len(cal), "calibration,", len(held), "held-out", file=sys.stderr)
