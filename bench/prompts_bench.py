"""Text prompts: render time per prompt, bytes on disk per second of audio, and how long a menu
of 30 text prompts takes to check and load, cold (empty cache) and warm (everything cached).

    .venv/bin/python bench/prompts_bench.py [--prompts 30] [--runs 3] [--full] [--quick]

Uses the real synthesizer of the default settings (espeak-ng + sox) into a temporary cache
directory; `--full` renders 60 prompts per language and repeats 5 times. Prints a table; no
assertions (timing depends on the machine and on what else runs on it).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ivrserver.config import PromptSettings
from ivrserver.files import menus as menu_files
from ivrserver.services.speech import SpeechRenderer

ZH = ["余额查询请按{n}", "您好，欢迎致电客服热线，第{n}项服务", "充值服务请按{n}，人工服务请按零",
      "您所在地区的第{n}号故障正在处理中，请稍后再试"]
EN = ["For your balance, press {n}.", "Welcome to the hotline, service number {n}.",
      "To top up, press {n}. For an agent, press zero.", "Outage number {n} in your area is being fixed."]


def _length(path: Path) -> float:
    """Seconds of audio as sox counts them reading the samples (`sox FILE -n stat`)."""
    err = subprocess.run(["sox", str(path), "-n", "stat"], capture_output=True, text=True, check=True).stderr
    return float(next(ln for ln in err.splitlines() if ln.startswith("Length")).split(":")[1])


def menu_text(prompts: int, salt: str) -> str:
    """A valid menu of `prompts` text prompts (each in zh and en) over prompts/2 menu nodes."""
    nodes = []
    per_node = 2
    count = max(1, prompts // per_node)
    for i in range(count):
        items = []
        for j in range(per_node):
            n = i * per_node + j
            zh, en = ZH[n % len(ZH)].format(n=n), EN[n % len(EN)].format(n=n)
            items.append(f'      - {{text: {{zh: "{zh}{salt}", en: "{en}{salt}"}}}}')
        nxt = f"n{i + 1}" if i + 1 < count else "n0"
        nodes.append(f"  n{i}:\n    prompts:\n" + "\n".join(items)
                     + f'\n    options:\n      "1": {{goto: {nxt}}}\n      "2": {{queue: general}}\n')
    return "language: zh\nentry: {open: n0}\nlint: {max_depth: 20}\nnodes:\n" + "".join(nodes)


def run(args: argparse.Namespace) -> None:
    rows: list[tuple[str, str]] = []
    cold: list[float] = []
    warm: list[float] = []
    per_prompt: list[float] = []
    rates: list[float] = []
    rendered = 0
    for r in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="prompts-bench-") as tmp:
            renderer = SpeechRenderer.from_settings(PromptSettings(cache_dir=tmp), None)
            text = menu_text(args.prompts, f" {r}")
            t0 = time.perf_counter()
            menu, issues = menu_files.check_text(text, "bench.yaml", "bench", None, renderer)
            cold.append(time.perf_counter() - t0)
            assert menu is not None, [i.format() for i in issues if i.severity == "error"]
            rendered = len(renderer.rendered)
            per_prompt.append(cold[-1] / rendered)
            clips = sorted(Path(tmp).glob("*.sln"))
            sizes = [p.stat().st_size for p in clips]
            # the duration as sox reads it from the files, not from our own byte-rate constant
            durations = [_length(p) for p in clips]
            rates.append(sum(sizes) / sum(durations))
            for _ in range(3):
                renderer.rendered.clear()
                t0 = time.perf_counter()
                menu_files.check_text(text, "bench.yaml", "bench", None, renderer)
                warm.append(time.perf_counter() - t0)
                assert renderer.rendered == []
            seconds = sum(durations)
    rows += [
        ("text prompts in the menu (zh + en variants)", f"{args.prompts} × 2 = {args.prompts * 2}"),
        ("files rendered cold (texts + Mandarin number words)", f"{rendered}"),
        ("render time per file, cold (median of runs)", f"{statistics.median(per_prompt) * 1000:.0f} ms"),
        ("check + load, cold (median / max)", f"{statistics.median(cold):.2f} s / {max(cold):.2f} s"),
        ("check + load, warm (median / max)", f"{statistics.median(warm) * 1000:.0f} ms / {max(warm) * 1000:.0f} ms"),
        ("audio rendered per run", f"{seconds:.0f} s in {sum(sizes) / 1e6:.1f} MB"),
        ("bytes on disk per second of audio (8 kHz slin)", f"{statistics.median(rates):,.0f} B/s"),
    ]
    width = max(len(k) for k, _ in rows)
    print(f"prompts_bench: {args.runs} run(s), espeak-ng + sox, concurrency {PromptSettings().concurrency}")
    print(f"{'measure':<{width}}  value")
    print("-" * (width + 20))
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=30)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--full", action="store_true", help="60 prompts, 5 runs")
    parser.add_argument("--quick", action="store_true", help="1 run (make bench)")
    args = parser.parse_args()
    if args.full:
        args.prompts, args.runs = 60, 5
    if args.quick:
        args.runs = 1
    run(args)


if __name__ == "__main__":
    main()
