"""Clean a script(1) log for reading: escape codes removed, and of a tqdm bar's redraws (each
after a carriage return) one per second of the bar's elapsed time and stage is kept, plus its
state when something else is printed or it ends. Usage: python clean.py RAW OUT"""
import re
import sys

ESCAPE = re.compile(r"\x1b(\[[0-9;?]*[A-Za-z]|[()][A-Za-z0-9]|[=>])")
BAR = re.compile(r"^(?P<desc>[^:|]*): *\d+%\|[^|]*\| *\d+/\d+ \[(?P<info>[^\]]*)\]")


def bar_key(segment: str):
    """(description, elapsed seconds, stage) of a tqdm redraw; None for any other text."""
    m = BAR.match(segment)
    if m is None:
        return None
    parts = m["info"].split(", ")
    return m["desc"], parts[0].split("<")[0], ", ".join(parts[2:])


def clean(text: str) -> str:
    text = ESCAPE.sub("", text).replace("\r\n", "\n")
    out, seen, shown, pending = [], set(), {}, None  # shown: the last redraw kept, per bar

    def flush() -> None:
        nonlocal pending
        if pending is not None and shown.get(bar_key(pending)[0]) != pending:  # not the same bar again
            out.append(pending)
            shown[bar_key(pending)[0]] = pending
        pending = None

    for line in text.split("\n"):
        for segment in line.split("\r"):
            segment = segment.rstrip()
            if not segment.strip():  # a bar cleared, or a blank
                continue
            key = bar_key(segment)
            if key is None:
                flush()
                out.append(segment)
            elif key not in seen:
                seen.add(key)
                out.append(segment)
                shown[key[0]], pending = segment, None
            else:
                pending = segment
    flush()
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    raw, done = sys.argv[1:3]
    with open(raw, encoding="utf-8", errors="replace") as f:
        text = f.read()
    with open(done, "w", encoding="utf-8") as f:
        f.write(clean(text))
