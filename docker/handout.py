#!/usr/bin/env python3
"""The output blocks of a handout as data, for docker/compose-test.sh. Students need not run or edit this.

Each `<!-- output: NAME | starter|solution|compile | ARGS [| exit N] [| varies K,K] -->` marker
of an exercise's README.md is followed by the text the command prints (lab-tests/tests/handout.rs
checks the same blocks natively). Under Docker the compose test runs the same commands with
`docker compose run --rm demo ARGS` and checks what does not vary from run to run: the
`key=value` lines, the `#` verdict lines, verify's PASS/FAIL per check and its verdict.

  handout.py commands README PHASE   one line per block of that phase: NAME<TAB>EXIT<TAB>ARGS
  handout.py check README NAME       the output on stdin matches block NAME (else the differences, exit 1)
"""
import re
import sys

MARKER = re.compile(r"<!-- output: (.*?) -->\n```text\n(.*?)```", re.S)
ID = re.compile(r"-\d{13}-[0-9a-f]{6}")
CODE = re.compile(r"#[0-9a-f]{6}\b")
# Keys whose values change with every run or every build, whatever the code does.
VARYING_KEYS = {"elapsed_ms", "worker_code", "latency_p50_us", "latency_p99_us", "requests_per_sec"}


def blocks(path):
    found = {}
    order = []
    for marker, body in MARKER.findall(open(path, encoding="utf-8").read()):
        parts = [p.strip() for p in marker.split(" | ")]
        name, phase, args = parts[0], parts[1], parts[2]
        exit_code, varies = 0, []
        for option in parts[3:]:
            if option.startswith("exit "):
                exit_code = int(option[5:])
            elif option.startswith("varies "):
                varies += [k.strip() for k in option[7:].split(",")]
        found[name] = {"phase": phase, "args": args, "exit": exit_code, "varies": varies, "body": body}
        order.append(name)
    return found, order


def stable(text, varies):
    """The lines that must be the same in every run of the same code."""
    out = []
    for line in text.splitlines():
        line = CODE.sub("#<code>", ID.sub("-<id>", line.rstrip("\r")))
        if any(line.startswith(v) for v in varies):
            continue
        key = re.match(r"^([a-z_0-9]+)=", line)
        if key:
            if key.group(1) not in VARYING_KEYS and key.group(1) not in varies:
                out.append(line)
        elif line.startswith(("PASS ", "FAIL ")):
            out.append(" ".join(line.split()[:2]))  # the check's name and result; details vary
        elif line.startswith("verdict:"):
            out.append(line)
        elif line.startswith("# ") and not re.search(r"running|WARNING|started", line):
            out.append(" ".join(line.split()))
    return out


def main():
    command, path = sys.argv[1], sys.argv[2]
    found, order = blocks(path)
    if command == "commands":
        for name in order:
            block = found[name]
            if block["phase"] == sys.argv[3]:
                print(f"{name}\t{block['exit']}\t{block['args']}")
    elif command == "check":
        block = found[sys.argv[3]]
        want = stable(block["body"], block["varies"])
        got = stable(sys.stdin.read(), block["varies"])
        if want != got:
            missing = [line for line in want if line not in got]
            extra = [line for line in got if line not in want]
            print(f"block {sys.argv[3]} of {path}: the handout shows {missing} where this run printed {extra}")
            sys.exit(1)
        print(f"block {sys.argv[3]}: {len(want)} lines as the handout shows them")
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main()
