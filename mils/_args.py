"""The `mils` command line's arguments: help written for users, options in groups.

Run options (loop, endpoints, concurrency) default to None here: their defaults come from the
task, a `--config` file or the saved run, in that order under the flags (see `_settings`).
The help states each default.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import mils
from mils._local import PULLED_DIR
from mils._metrics import DEFAULT_METRICS_HOST
from mils._report import DEFAULT_LIMIT, SORTS
from mils.adapters.local_stack import DEFAULT_OFFLINE_GENERATOR, OFFLINE_GENERATORS
from mils.adapters.openai_batch import DEFAULT_BATCH_LINGER_S, DEFAULT_BATCH_POLL_S
from mils.adapters.openai_generator import (
    DEFAULT_API_KEY_ENV,
    DEFAULT_MAX_TOKENS,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_P,
    REPLY_FORMATS,
)
from mils.adapters.renderers import DEFAULT_RENDER_SIZE, DEFAULT_RENDER_TIMEOUT
from mils.engine import ConcurrencyConfig, LoopConfig, RetryConfig
from mils.tasks import TASKS

__all__ = ["DEFAULT_GENERATOR_TIMEOUT", "DEMO_LOOP", "parser"]

DEFAULT_GENERATOR_TIMEOUT = 300.0
DEMO_LOOP = LoopConfig(steps=3, keep=12, requested=8)
_LOOP = LoopConfig()
_CONCURRENCY = ConcurrencyConfig()

_CAPTION_EXAMPLES = """\
examples:
  mils local up && mils caption photos/ --steps 3     offline, on the local stack
  mils caption photos/*.jpg --generator-url http://vllm:8000/v1 \\
      --generator-model meta-llama/Llama-3.1-8B-Instruct --scorer-url triton:8001
  mils caption clips/*.mp4                             videos: the task follows the files
  mils caption media/                                  images, videos, sounds: one run
  mils caption photos/ --config run.toml --steps 5     a settings file, a flag on top
  mils config show runs/r1 > run.toml                  the settings of an earlier run
"""

_MODELS_EXAMPLES = """\
examples:
  mils models pull openai/clip-vit-base-patch32        from the hub (needs network)
  mils models pull google/siglip-base-patch16-224 --as siglip
  mils models pull ~/checkpoints/clip-b32 --as clip     a folder you copied here
  mils local down; mils local up                       serve them
  mils caption photos/ --text-model siglip_text --image-model siglip_image
"""

_EVAL_EXAMPLES = """\
examples:
  mils eval runs/demo-20250101-120000 --references .mils/samples/references.json
  mils eval runs/coco1 --references captions_val2014.json --json runs/coco1/eval.json
  mils eval runs/r1 --references refs/                 refs/<sample id>.txt, a line each

metrics (pycocoevalcap; its tokenizer and METEOR run Java):
  BLEU-n    n-gram precision against the references (n = 1..4), with a brevity penalty
  METEOR    unigram matches counting stems, synonyms and paraphrases, recall-weighted
  ROUGE-L   longest common subsequence with the best-matching reference (F-measure)
  CIDEr     n-gram agreement with all references, rare n-grams weighted up (can exceed 1)
  SPICE     agreement of scene graphs (objects, attributes, relations); needs the
            Stanford CoreNLP jars, which pycocoevalcap downloads on first use
"""

_REPORT_EXAMPLES = """\
examples:
  mils report runs/demo-20250101-120000 --references .mils/samples/references.json
  mils report runs/coco1 --out coco1.html --sort worst --limit 50

The page is one HTML file with its images inlined (nothing fetched, no script): it opens
anywhere and can be attached or mailed. Per sample: thumbnails of its inputs, the best text
after each step with its score, a score-by-step plot and, with --references, the ground
truth; above them the run: samples done and failed (with reasons), steps and their rate,
candidates, and what log.jsonl recorded (texts embedded, retries and faults by kind).
"""

_ENHANCE_EXAMPLES = """\
examples:
  mils local up && mils enhance prompts.txt --steps 3   offline: the closed world's renderer
  mils enhance --prompt "a small red circle at the top left" --prompt "two blue stars"
  mils enhance drawbench.csv --scorer-url triton:8001 --renderer-model sd_render \\
      --text-model pickscore_text --target-model pickscore_image
  mils enhance prompts.txt --renderer-kind openai --renderer-url https://api.example/v1 \\
      --renderer-model flux-schnell                     an OpenAI-compatible images API

A .txt file holds one prompt per line; a .csv file a "prompt" column (else its first).
"""

_STYLIZE_EXAMPLES = """\
examples:
  mils local up && mils stylize content.png style.png --steps 3
  mils stylize --pairs pairs.csv                       columns content,style (paths)
  mils stylize a.png s.png --scorer-url triton:8001 --renderer-model pix2pix_edit \\
      --style-model vgg_style
"""

_ARITHMETIC_EXAMPLES = """\
examples:
  mils local up && mils arithmetic scene.png beeps.wav --steps 2
  mils arithmetic photo.jpg rain.flac --out runs/arith1

Each input is captioned by its kind's captioning task, the LLM merges the captions into one
prompt, and t2i-enhance improves and renders it; OUT/arithmetic.json says what each stage
made and OUT/result.png is the final image.
"""

_RESUME_EXAMPLES = """\
examples:
  mils resume runs/r1                                  same endpoints as saved
  mils resume runs/r1 --generator-url http://vllm2:8000/v1 --samples-in-flight 64
"""


def _limit(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'auto', got {value!r}") from None


def _subcommand(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, summary: str, **kw: str
) -> argparse.ArgumentParser:
    return sub.add_parser(
        name,
        help=summary,
        description=summary[0].upper() + summary[1:] + ".",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        **kw,  # type: ignore[arg-type]
    )


def _offline_generator_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--generator",
        choices=tuple(OFFLINE_GENERATORS),
        default=DEFAULT_OFFLINE_GENERATOR,
        help="the LLM the local stack serves (%(default)s; README: Caption quality)",
    )


def _loop_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("the loop (defaults: the task's own; image-caption's shown)")
    g.add_argument("--steps", metavar="N", type=int, help="optimisation steps per sample (10)")
    g.add_argument(
        "--keep", metavar="N", type=int, help="best candidates shown each step and kept (50)"
    )
    g.add_argument(
        "--requested", metavar="N", type=int, help="new candidates asked for per step (50)"
    )
    g.add_argument(
        "--exploration",
        metavar="X",
        type=float,
        help="fraction of the shown slots given to random lower-ranked candidates, 0-1 (0)",
    )
    g.add_argument(
        "--patience",
        metavar="N",
        type=int,
        help="stop a sample after N steps without a better best (off)",
    )
    g.add_argument(
        "--top-k",
        metavar="K",
        type=int,
        help=f"K of the mean of the top K per step ({_LOOP.top_k})",
    )
    g.add_argument(
        "--candidate-limit",
        metavar="N",
        type=int,
        help="most new candidates scored per step; extra reply lines are scored up to it "
        "(4 x --requested)",
    )
    g.add_argument(
        "--seed", metavar="N", type=int, help=f"seed of the exploration draws ({_LOOP.seed})"
    )


def _endpoint_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("the generator (an OpenAI-compatible chat endpoint)")
    g.add_argument(
        "--generator-url",
        action="append",
        metavar="URL",
        help="base URL, e.g. http://vllm:8000/v1; repeat for several endpoints "
        "(default: the local stack of `mils local up`)",
    )
    g.add_argument(
        "--generator-model",
        metavar="NAME",
        help="model name sent with each request (the local stack's, or 'default')",
    )
    g.add_argument(
        "--prompt-mode",
        choices=("chat", "completion"),
        help="how the generator is asked: chat (an instruction, for instruct models) or "
        "completion (it continues the scored list; for base and tiny models) (chat; on "
        "the local stack its model's best: completion)",
    )
    g.add_argument(
        "--reply-format",
        choices=REPLY_FORMATS,
        help="how candidates are asked for in chat mode: lines (a numbered list) or json (a "
        "JSON list, by `response_format`, where the endpoint supports it; else lines, and "
        "the run's config.json says so) (lines)",
    )
    g.add_argument(
        "--temperature",
        metavar="T",
        type=float,
        help=f"sampling temperature, 0-2 ({DEFAULT_TEMPERATURE})",
    )
    g.add_argument(
        "--top-p", metavar="P", type=float, help=f"nucleus sampling mass, 0-1 ({DEFAULT_TOP_P})"
    )
    g.add_argument(
        "--max-tokens",
        metavar="N",
        type=int,
        help=f"most tokens per reply; a reply cut off loses its last line ({DEFAULT_MAX_TOKENS})",
    )
    g.add_argument(
        "--rpm",
        type=int,
        metavar="N",
        help="the provider's requests-per-minute limit, per endpoint: requests are paced "
        "under it (none; a limit the endpoint states in x-ratelimit-* headers applies anyway)",
    )
    g.add_argument(
        "--tpm",
        type=int,
        metavar="N",
        help="the provider's tokens-per-minute limit (prompt + completion), per endpoint, "
        "likewise (none)",
    )
    g.add_argument(
        "--generator-timeout",
        type=float,
        dest="read_timeout",
        metavar="SECONDS",
        help=f"wait for one reply before retrying it ({DEFAULT_GENERATOR_TIMEOUT:.0f} s)",
    )
    g.add_argument(
        "--generator-api-key-env",
        dest="api_key_env",
        metavar="VAR",
        help=f"environment variable holding the API key ({DEFAULT_API_KEY_ENV})",
    )
    g.add_argument(
        "--generator-api-key-file",
        dest="api_key_file",
        metavar="FILE",
        help="file holding the API key, used when the variable is unset (none)",
    )
    b = p.add_argument_group(
        "batch mode (each step's requests go as one OpenAI Batch API job: hosted providers "
        "bill them at about half price, and answer within hours, not seconds)"
    )
    b.add_argument(
        "--generator-mode",
        choices=("live", "batch"),
        help="live requests, or Batch API jobs (live; a resume keeps the run's)",
    )
    b.add_argument(
        "--batch-poll",
        dest="batch_poll_s",
        type=float,
        metavar="SECONDS",
        help=f"how often a job's status is asked for ({DEFAULT_BATCH_POLL_S:g})",
    )
    b.add_argument(
        "--batch-linger",
        dest="batch_linger_s",
        type=float,
        metavar="SECONDS",
        help="a job is sent once no request has joined it for this long "
        f"({DEFAULT_BATCH_LINGER_S:g})",
    )
    s = p.add_argument_group("the scorer (Triton Inference Server)")
    s.add_argument(
        "--scorer-url",
        metavar="HOST:PORT",
        help="Triton address, its gRPC port for grpc (default: the local stack)",
    )
    s.add_argument(
        "--scorer-protocol", choices=("grpc", "http"), help="how to talk to Triton (grpc)"
    )
    s.add_argument(
        "--text-model",
        metavar="NAME",
        help="Triton text encoder (the task's: clip_text, xclip_text, clap_text; on the "
        "local stack its own)",
    )
    s.add_argument(
        "--target-model",
        "--image-model",
        dest="image_model",
        metavar="NAME",
        help="Triton encoder of the image, video or audio (the task's: clip_image, "
        "xclip_video, clap_audio; on the local stack its own)",
    )


def _renderer_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("the renderer (a Triton model or an OpenAI-compatible images API)")
    g.add_argument(
        "--renderer-kind",
        choices=("triton", "openai"),
        help="a Triton model (TEXT/SEED in, IMAGE out) or an images API "
        "(/images/generations, /images/edits) (triton)",
    )
    g.add_argument(
        "--renderer-url",
        metavar="URL",
        help="Triton HOST:PORT, or the images API's base URL (default: the scorer's Triton)",
    )
    g.add_argument(
        "--renderer-model",
        metavar="NAME",
        help="the renderer (the task's: sd_render, pix2pix_edit; on the local stack the "
        "closed world's scene_render, scene_edit)",
    )
    g.add_argument(
        "--render-seed", metavar="N", type=int, help="the fixed seed of every render (0)"
    )
    g.add_argument(
        "--image-size",
        metavar="WxH",
        help=f"the size an images API is asked for ({DEFAULT_RENDER_SIZE})",
    )
    g.add_argument(
        "--renderer-api-key-env",
        metavar="VAR",
        help="environment variable holding the images API's key (OPENAI_API_KEY)",
    )
    g.add_argument(
        "--renderer-timeout",
        metavar="SECONDS",
        type=float,
        help=f"seconds allowed per render ({DEFAULT_RENDER_TIMEOUT:g})",
    )
    g.add_argument(
        "--style-model",
        metavar="NAME",
        help="style transfer: the Triton style/content loss model (vgg_style; on the local "
        "stack scene_style)",
    )


def _generation_command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    summary: str,
    epilog: str,
) -> argparse.ArgumentParser:
    """A command running a render-then-score task: the caption command's options and the
    renderer's."""
    p = _subcommand(sub, name, summary, epilog=epilog)
    p.add_argument("--out", type=Path, metavar="DIR", help="run directory (runs/<task>-<time>)")
    p.add_argument(
        "--init-pool", type=Path, metavar="FILE", help="initial pool, a text per line (the task's)"
    )
    _loop_args(p)
    _endpoint_args(p)
    _renderer_args(p)
    _run_args(p)
    return p


def _run_args(p: argparse.ArgumentParser) -> None:
    c = p.add_argument_group("concurrency and retries")
    c.add_argument(
        "--samples-in-flight",
        type=int,
        metavar="N",
        help=f"samples worked on at once; bounds memory ({_CONCURRENCY.samples_in_flight})",
    )
    c.add_argument(
        "--generator-in-flight",
        type=_limit,
        metavar="N|auto",
        help="requests in flight per generator endpoint; auto finds the endpoint's best "
        "concurrency from its latency (auto)",
    )
    c.add_argument(
        "--score-batch",
        type=int,
        metavar="N",
        help=f"most texts per scorer request ({_CONCURRENCY.score_batch})",
    )
    c.add_argument(
        "--score-wait-ms",
        type=float,
        metavar="MS",
        help=f"how long a partial scorer batch waits to fill ({_CONCURRENCY.score_wait_ms:g} ms)",
    )
    c.add_argument(
        "--retries",
        type=int,
        metavar="N",
        help=f"attempts per endpoint call on transient faults, the first included "
        f"({RetryConfig().attempts})",
    )
    c.add_argument(
        "--max-rate-limit-wait",
        type=float,
        metavar="SECONDS",
        help="how long a rate-limited generator endpoint (HTTP 429) may stay paused with no "
        "request served before calls to it fail; a 429 pauses the endpoint and costs no "
        f"retry ({RetryConfig().max_rate_limit_wait_s:g})",
    )
    _budget_args(p)
    o = p.add_argument_group("output")
    o.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="a TOML file of settings (as `mils config show` prints); flags override it",
    )
    o.add_argument(
        "--progress",
        choices=("auto", "bar", "plain", "json", "off"),
        default="auto",
        help="live progress: a bar on a terminal, else a plain line every few seconds; "
        "json for machines (auto)",
    )
    o.add_argument(
        "--no-progress", dest="progress", action="store_const", const="off", help="--progress off"
    )
    o.add_argument(
        "--format",
        choices=("tsv", "table", "jsonl"),
        default="tsv",
        help="the final listing of best texts on stdout (tsv)",
    )
    o.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default="warning",
        help="console log level; the run's log.jsonl has every level (warning)",
    )
    m = p.add_argument_group("metrics (Prometheus)")
    m.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics while the run goes; "
        "0 picks a free port (printed) (off)",
    )
    m.add_argument(
        "--metrics-host",
        metavar="HOST",
        help=f"address the metrics server binds; 0.0.0.0 to be scraped from outside a "
        f"container ({DEFAULT_METRICS_HOST})",
    )
    r = p.add_argument_group("many processes and machines (Ray; needs the `ray` extra)")
    r.add_argument(
        "--ray",
        metavar="auto|local|HOST:PORT",
        help="shard the samples over Ray actors, each running the engine with a share of "
        "the limits, all committing to this one run directory: auto joins the cluster of "
        "`ray start`, local starts one on this machine, HOST:PORT is a head node (off)",
    )
    r.add_argument(
        "--ray-actors",
        type=int,
        metavar="N",
        help="shard workers (one per CPU of the cluster)",
    )


def _budget_args(p: argparse.ArgumentParser) -> None:
    b = p.add_argument_group(
        "cost and budgets (a budget counts every session of the run; when one is reached "
        "the run stops cleanly with exit status 3, and `mils resume` with a higher one goes on)"
    )
    b.add_argument(
        "--price-in",
        type=float,
        metavar="PRICE",
        help="price of a million prompt tokens, in your currency (e.g. USD); saved (none)",
    )
    b.add_argument(
        "--price-out",
        type=float,
        metavar="PRICE",
        help="price of a million completion tokens; saved (none)",
    )
    b.add_argument(
        "--prices",
        type=Path,
        metavar="FILE",
        help="a TOML price table per model (see examples/prices.toml): the generator "
        "model's prices, unless --price-in/--price-out are given; saved (none)",
    )
    b.add_argument(
        "--max-cost",
        type=float,
        metavar="COST",
        help="stop once the run has cost this much; needs both prices (none)",
    )
    b.add_argument(
        "--max-tokens-total",
        type=int,
        metavar="N",
        help="stop once the run's prompt plus completion tokens reach N (none)",
    )
    b.add_argument(
        "--max-requests",
        type=int,
        metavar="N",
        help="send at most N generator requests (one per step) over the run (none)",
    )


def parser() -> argparse.ArgumentParser:
    """The whole command line."""
    top = argparse.ArgumentParser(
        prog="mils",
        description="Run MILS: a text-only LLM proposes texts, a pretrained scorer scores "
        "them against your images, the best go back into the prompt, and the loop repeats.",
        epilog="tasks:\n"
        + "\n".join(f"  {t.name:16} {t.summary}" for t in TASKS.values())
        + "\n\n`mils COMMAND --help` describes each command.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("--version", action="version", version=f"mils {mils.__version__}")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    cap = _subcommand(
        sub,
        "caption",
        "caption images, videos or sounds with the MILS loop",
        epilog=_CAPTION_EXAMPLES,
    )
    cap.add_argument(
        "inputs",
        nargs="+",
        help="image, video or audio files, directories or glob patterns (several kinds: one "
        "run, each file by its kind's task)",
    )
    cap.add_argument(
        "--task",
        metavar="NAME",
        help="what to do: "
        + ", ".join(TASKS)
        + " (default: the captioning task of each input's kind of media; see `mils tasks`)",
    )
    cap.add_argument(
        "--out", type=Path, metavar="DIR", help="run directory, new or empty (runs/<task>-<time>)"
    )
    cap.add_argument(
        "--init-pool", type=Path, metavar="FILE", help="initial pool, a text per line (the task's)"
    )
    cap.add_argument(
        "--dry-run",
        action="store_true",
        help="print the projected generator requests, tokens and cost (an estimate), then "
        "stop: nothing is sent or written",
    )
    _loop_args(cap)
    _endpoint_args(cap)
    _run_args(cap)

    res = _subcommand(
        sub, "resume", "continue every unfinished sample of a run", epilog=_RESUME_EXAMPLES
    )
    res.add_argument("run_dir", type=Path, help="the run directory (--out of `mils caption`)")
    _endpoint_args(res)
    _renderer_args(res)
    _run_args(res)

    enh = _generation_command(
        sub,
        "enhance",
        "improve text-to-image prompts: rewrites whose renders match each prompt best",
        _ENHANCE_EXAMPLES,
    )
    enh.add_argument("prompts", nargs="*", type=Path, help="files of prompts (.txt or .csv)")
    enh.add_argument(
        "--prompt",
        action="append",
        default=[],
        metavar="TEXT",
        help="a prompt to improve; repeat for more",
    )

    sty = _generation_command(
        sub,
        "stylize",
        "find the edit instruction that gives a content image the style of another",
        _STYLIZE_EXAMPLES,
    )
    sty.add_argument("images", nargs="*", type=Path, help="CONTENT STYLE image pairs")
    sty.add_argument(
        "--pairs", type=Path, metavar="FILE", help="a CSV of content,style image paths"
    )

    ari = _generation_command(
        sub,
        "arithmetic",
        "caption two inputs (images, videos or sounds), merge the captions, render the result",
        _ARITHMETIC_EXAMPLES,
    )
    ari.add_argument("inputs", nargs=2, type=Path, help="two media files")

    status = _subcommand(sub, "status", "show a run's progress (also while it runs)")
    status.add_argument("run_dir", type=Path)
    runs = _subcommand(sub, "runs", "list the runs in a folder with their progress")
    runs.add_argument("folder", type=Path, nargs="?", default=Path("runs"), help="(runs)")

    config = _subcommand(sub, "config", "print a run's settings as a file --config accepts")
    config.add_argument("action", choices=("show",))
    config.add_argument("run_dir", type=Path)

    _subcommand(sub, "tasks", "list the tasks, one line each")

    sal = _subcommand(
        sub, "salvage", "copy every readable committed step of a damaged run into a new run"
    )
    sal.add_argument("run_dir", type=Path)
    sal.add_argument("new_dir", type=Path, help="where the new run goes (new or empty)")

    loc = _subcommand(sub, "local", "start, stop or show the offline local stack")
    loc.add_argument("action", choices=("up", "down", "status"))
    _offline_generator_arg(loc)
    loc.add_argument(
        "--model-repository",
        type=Path,
        metavar="DIR",
        help="Triton model repository to serve (the one shipped with mils)",
    )

    models = _subcommand(
        sub,
        "models",
        "install a real CLIP or SigLIP scorer into the local model repository, or list them",
        epilog=_MODELS_EXAMPLES,
    )
    models.add_argument("action", choices=("pull", "list"))
    models.add_argument(
        "name", nargs="?", help="a Hugging Face hub id, or the folder of a checkpoint you have"
    )
    models.add_argument(
        "--as", dest="alias", metavar="ALIAS", help="model names ALIAS_text, ALIAS_image "
        "(default: from NAME, e.g. clip_vit_base_patch32)"
    )  # fmt: skip
    models.add_argument(
        "--into", type=Path, default=PULLED_DIR, metavar="DIR",
        help="the model repository to write (%(default)s, which `mils local up` serves)",
    )  # fmt: skip

    ev = _subcommand(
        sub,
        "eval",
        "score a run's captions against reference captions, finally and per step",
        epilog=_EVAL_EXAMPLES,
    )
    ev.add_argument("run_dir", type=Path, help="the run directory (--out of `mils caption`)")
    ev.add_argument(
        "--references", type=Path, required=True, metavar="REFS",
        help="a COCO captions JSON (images matched by file name) or a folder of "
        "<sample id>.txt files, one reference a line",
    )  # fmt: skip
    ev.add_argument(
        "--json", type=Path, metavar="FILE",
        help="also write every score, per row and per sample, as JSON to FILE (none)",
    )  # fmt: skip
    ev.add_argument(
        "--no-spice", dest="spice", action="store_false",
        help="skip SPICE (slow, 8 GB of Java heap) even when its jars are there",
    )  # fmt: skip

    rep = _subcommand(
        sub,
        "report",
        "write a run's HTML report: per sample its image, best text by step, score plot",
        epilog=_REPORT_EXAMPLES,
    )
    rep.add_argument("run_dir", type=Path, help="the run directory (--out of `mils caption`)")
    rep.add_argument(
        "--out", type=Path, metavar="FILE", help="the HTML file to write (RUN_DIR/report.html)"
    )
    rep.add_argument(
        "--references", type=Path, metavar="REFS",
        help="ground truth shown in each card: a COCO captions JSON or a folder of "
        "<sample id>.txt files, as `mils eval` reads (none)",
    )  # fmt: skip
    rep.add_argument(
        "--limit", type=int, default=DEFAULT_LIMIT, metavar="N",
        help="most sample cards on the page, 0 for all; keeps a large run's page small "
        "(%(default)s)",
    )  # fmt: skip
    rep.add_argument(
        "--sort", choices=SORTS, default="input",
        help="which cards come first: input order, best or worst score, failed (%(default)s)",
    )  # fmt: skip

    demo = _subcommand(
        sub, "demo", "caption generated scenes, clips or sounds on a throwaway local stack"
    )
    demo.add_argument(
        "--media",
        choices=("image", "video", "audio"),
        default="image",
        help="what to caption: generated scenes, moving scenes or sounds (%(default)s)",
    )
    demo.add_argument("--out", type=Path, help="run directory (runs/demo-<time>)")
    demo.add_argument("--steps", type=int, default=DEMO_LOOP.steps, help="(%(default)s)")
    _offline_generator_arg(demo)
    return top
