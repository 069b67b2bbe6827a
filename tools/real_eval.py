"""Judge-free Table 2 for the SmolLM2 run: before / SeqKD / GAD / teacher, in- and out-of-distribution.

    python tools/real_eval.py --teacher ~/.cache/gadx/smollm2-135m-instruct --data runs/smollm2/data \
        --out runs/smollm2/eval --model before=~/.cache/gadx/smollm2-student-10l \
        --model SeqKD=runs/smollm2/seqkd/student_hf --model GAD=runs/smollm2/gad/student_hf \
        [--teacher-url http://127.0.0.1:8011/v1] [--limit 40] [--max-new-tokens 128]

Logic in gadx.real.evaluate (its docstring defines the metrics). Prints the markdown table;
writes results.md, results.json and bars.png into --out.
"""
import argparse
import os

from gadx.real.evaluate import evaluate, format_table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", required=True, help="the teacher's HF folder (scores the answers)")
    p.add_argument("--teacher-url", help="answer with the served teacher instead of decoding its folder locally")
    p.add_argument("--teacher-model-name", default="smollm2-135m-instruct")
    p.add_argument("--data", required=True, help="folder of gadx.real.data.write_prompt_files")
    p.add_argument("--out", required=True)
    p.add_argument("--model", action="append", default=[], metavar="NAME=FOLDER", help="a model row (repeatable)")
    p.add_argument("--limit", type=int, default=40, help="first N prompts of each set (0 = all)")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--all-prompts", action="store_true",
                   help="every prompt of each set (NAME.all.jsonl), not only those whose teacher reply ended")
    p.add_argument("--temperature", type=float, default=0.0,
                   help="the students' decoding temperature (0 = greedy; > 0: one seeded sample each; the teacher stays greedy)")
    p.add_argument("--seed", type=int, default=0, help="the sampling seed when --temperature > 0")
    p.add_argument("--cache-dir", help="where each model's answers are cached (default OUT/cache); share it across seeds")
    a = p.parse_args()
    models = {}
    for spec in a.model:
        name, sep, folder = spec.partition("=")
        if not sep or not name or not folder:
            p.error(f"--model expects NAME=FOLDER, got {spec!r}")
        models[name] = os.path.expanduser(folder)
    res = evaluate(models, teacher=os.path.expanduser(a.teacher), data_dir=a.data, out_dir=a.out, limit=a.limit,
                   max_new_tokens=a.max_new_tokens, teacher_url=a.teacher_url,
                   teacher_model_name=a.teacher_model_name, batch_size=a.batch_size, all_prompts=a.all_prompts,
                   cache_dir=a.cache_dir, temperature=a.temperature, seed=a.seed)
    print(format_table(res))
    print(f"\nwritten: {a.out}/results.md, results.json, bars.png ({res['timings_s']['total']:.0f} s)")


if __name__ == "__main__":
    main()
