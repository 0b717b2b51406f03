"""``textgym feedback ...``: serve the labeling page, label on the console, train reward models.

- ``serve --db FILE [--host --port --token]``: the labeling web app (a token is generated when
  binding beyond localhost without one);
- ``label --db FILE --rater NAME``: rate the open "rate" tasks on the console;
- ``train-rm --db FILE --kind pairs|ratings|binary --out DIR``: fine-tune a reward model on the
  store's labels (every :class:`~textgym.feedback.reward_model.RewardModelConfig` field is an
  option) and print its held-out metrics; ``train-rm --data sst2|taskmaster4`` trains on a
  public labelled data set instead (:mod:`textgym.feedback.recipes`: its fixed split and
  settings, saved where the ``sst2_sentiment`` / ``taskmaster4_rm`` rewards look);
- ``train-disc --task NAME --out DIR [--negatives base|shuffled]``: pre-train a discriminator
  (:mod:`textgym.rewards.discriminator`) on the task's references against the base model's
  samples or shuffled-word texts, save it in Hugging Face format (``make_reward("discriminator",
  path=DIR)`` loads it) and print its held-out accuracy;
- ``stats --db FILE``: agreement statistics as JSON;
- ``export --db FILE --out FILE [--format F]`` / ``import --db FILE --file FILE [--format F]``:
  feedback data in and out as textgym JSONL, TRL preference or SFT data, Label Studio or
  Argilla records (:mod:`textgym.feedback.formats`); a bad file is one line naming the file,
  line and field, and exit code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import secrets
import sys

from textgym.fields import field_docs


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "feedback", help="human feedback: labeling web app, store, reward models"
    )
    commands = parser.add_subparsers(dest="feedback_command", metavar="SUBCOMMAND", required=True)

    serve = commands.add_parser("serve", help="serve the labeling web page")
    serve.add_argument("--db", required=True, help="feedback store file (created when missing)")
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8765, help="port (0 picks a free one)")
    serve.add_argument(
        "--token", default=None, help="access token; generated when --host is not loopback"
    )
    serve.add_argument(
        "--request-timeout",
        type=float,
        default=10.0,
        help="seconds a connection has to send its whole request (default 10)",
    )
    serve.add_argument(
        "--max-connections",
        type=int,
        default=64,
        help="connections served at once; more get 503 at once (default 64)",
    )
    serve.set_defaults(func=_serve)

    label = commands.add_parser("label", help="rate the open 'rate' tasks on the console")
    label.add_argument("--db", required=True)
    label.add_argument("--rater", required=True, help="your name, stored with each rating")
    label.set_defaults(func=_label)

    train = commands.add_parser(
        "train-rm", help="train a reward model on the store's labels or a public data set"
    )
    source = train.add_mutually_exclusive_group(required=True)
    source.add_argument("--db", help="feedback store whose labels are learned")
    source.add_argument(
        "--data",
        metavar="RECIPE",
        help="a public labelled data set with its fixed split and settings: sst2 (sentiment) "
        "or taskmaster4 (human labels of agent turns); options below override its settings",
    )
    train.add_argument(
        "--data-path", default=None, help="with --data: the data root (default ../shared/data)"
    )
    train.add_argument(
        "--out",
        default=None,
        help="folder for the Hugging Face format model (required with --db; with --data the "
        "default is where its reward looks: $TEXTGYM_REWARD_MODELS/RECIPE or "
        "runs/reward_models/RECIPE)",
    )
    train.add_argument("--rater", default=None, help="use only this rater's labels")
    _add_config_options(train)
    train.set_defaults(func=_train_rm)

    disc = commands.add_parser(
        "train-disc", help="pre-train a discriminator: task references against other texts"
    )
    disc.add_argument("--task", required=True, help="a task whose samples have references")
    disc.add_argument("--out", required=True, help="folder for the Hugging Face format model")
    disc.add_argument(
        "--negatives",
        choices=("base", "shuffled"),
        default="base",
        help="base: samples of --model for the same prompts; shuffled: the references with "
        "their words shuffled (no LM needed). Default base",
    )
    disc.add_argument("--model", default="smollm2-135m", help="the LM sampled for --negatives base")
    disc.add_argument("--split", default="train", help="task split (default train)")
    disc.add_argument("--limit", type=int, default=None, help="use the first N samples only")
    disc.add_argument("--max-prompt-tokens", type=int, default=256)
    disc.add_argument("--max-new-tokens", type=int, default=48)
    disc.add_argument("--temperature", type=float, default=1.0, help="sampling; 0 is greedy")
    disc.add_argument("--epochs", type=float, default=1.0, help="passes over the larger side")
    disc.add_argument("--eval-fraction", type=float, default=0.2, help="held out per side")
    disc.add_argument("--device", default=None, help="torch device; default CUDA if available")
    _add_disc_options(disc)
    disc.set_defaults(func=_train_disc)

    stats = commands.add_parser("stats", help="print agreement statistics as JSON")
    stats.add_argument("--db", required=True)
    stats.set_defaults(func=_stats)

    from textgym.feedback.formats import FORMATS

    export = commands.add_parser(
        "export", help="write samples and labels (JSONL, TRL, Label Studio, Argilla)"
    )
    export.add_argument("--db", required=True)
    export.add_argument("--out", required=True)
    export.add_argument("--format", choices=FORMATS, default="jsonl", help="default jsonl")
    export.set_defaults(func=_export)

    imp = commands.add_parser(
        "import", help="add samples and labels (JSONL, TRL, Label Studio, Argilla)"
    )
    imp.add_argument("--db", required=True)
    imp.add_argument("--file", required=True)
    imp.add_argument("--format", choices=FORMATS, default="jsonl", help="default jsonl")
    imp.add_argument(
        "--rater",
        default=None,
        help="rater of labels the file does not attribute (TRL data); default import:FILENAME",
    )
    imp.set_defaults(func=_import)


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    from textgym.feedback.reward_model import KINDS, RewardModelConfig

    docs = field_docs(RewardModelConfig)
    types = {"int": int, "float": float, "str": str, "bool": bool}
    # Unset options stay unset (SUPPRESS), so that --data's recipe settings can fill them.
    for f in dataclasses.fields(RewardModelConfig):
        option = "--" + f.name.replace("_", "-")
        name = str(f.type).split("|")[0].strip()
        help_text = f"{docs.get(f.name, '')} [default {f.default}]"
        if name == "bool":
            parser.add_argument(
                option,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=help_text,
            )
        else:
            parser.add_argument(
                option,
                type=types.get(name, str),
                default=argparse.SUPPRESS,
                choices=KINDS if f.name == "kind" else None,
                help=help_text,
            )


DISC_OFFLINE_FIELDS = (
    "base_model",
    "batch_size",
    "learning_rate",
    "head_learning_rate",
    "weight_decay",
    "gradient_penalty",
    "label_smoothing",
    "max_length",
    "seed",
)
"""The :class:`~textgym.rewards.discriminator.DiscriminatorConfig` fields that shape offline
pre-training (the rest steer online updates and are options of the reward)."""


def _add_disc_options(parser: argparse.ArgumentParser) -> None:
    from textgym.rewards.discriminator import DiscriminatorConfig

    docs = field_docs(DiscriminatorConfig)
    types = {"int": int, "float": float, "str": str}
    fields = {f.name: f for f in dataclasses.fields(DiscriminatorConfig)}
    for name in DISC_OFFLINE_FIELDS:
        f = fields[name]
        parser.add_argument(
            "--" + name.replace("_", "-"),
            type=types.get(str(f.type).split("|")[0].strip(), str),
            default=f.default,
            help=docs.get(name),
        )


def _serve(args: argparse.Namespace) -> int:
    from textgym.feedback.server import is_loopback, make_server

    token = args.token
    if token is None and not is_loopback(args.host):
        token = secrets.token_urlsafe(24)
    try:
        server = make_server(
            args.db,
            host=args.host,
            port=args.port,
            token=token,
            request_timeout=args.request_timeout,
            max_connections=args.max_connections,
        )
    except (ValueError, OSError) as exc:  # a bad token or limit, a port in use
        print(f"textgym feedback serve: {exc}", file=sys.stderr)
        return 2
    print(f"labeling {args.db} at {server.url}  (Ctrl+C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _label(args: argparse.Namespace) -> int:
    from textgym.feedback.human import console_label
    from textgym.feedback.store import FeedbackStore

    with FeedbackStore(args.db) as store:
        done = 0
        skipped: set[int] = set()
        while True:
            task = store.next_task(args.rater, kinds=["rate"], exclude=skipped)
            if task is None:
                break
            try:
                if console_label(store, task.id, rater=args.rater, input_fn=input):
                    done += 1
                else:
                    skipped.add(task.id)
            except (EOFError, KeyboardInterrupt):
                break
        print(f"\n{done} ratings saved; {store.progress(args.rater)['left_for_rater']} tasks left")
    return 0


def _train_rm(args: argparse.Namespace) -> int:
    from textgym.feedback.reward_model import (
        RewardModelConfig,
        examples_from_store,
        train_reward_model,
    )
    from textgym.feedback.store import FeedbackStore

    values = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(RewardModelConfig)
        if hasattr(args, f.name)
    }
    if args.data is not None:
        return _train_recipe(args, values)
    if args.out is None:
        print("textgym feedback train-rm: --out is required with --db", file=sys.stderr)
        return 2
    config = RewardModelConfig(**values)
    with FeedbackStore(args.db) as store:
        examples = examples_from_store(store, config.kind, rater=args.rater)
    if not examples:
        print(f"no {config.kind} labels in {args.db}" + (f" by {args.rater}" if args.rater else ""))
        return 1
    model, metrics = train_reward_model(examples, config=config)
    model.save(args.out)
    print(json.dumps({"saved": args.out, **metrics}, indent=2))
    return 0


def _train_recipe(args: argparse.Namespace, values: dict[str, object]) -> int:
    from textgym.feedback.recipes import reward_model_dir, train_recipe

    out = args.out if args.out is not None else str(reward_model_dir(args.data))
    try:
        _, metrics = train_recipe(args.data, out, path=args.data_path, **values)
    except (ValueError, OSError) as exc:  # unknown recipe, bad kind, missing or malformed data
        print(f"textgym feedback train-rm: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"saved": out, "recipe": args.data, **metrics}, indent=2))
    return 0


def _train_disc(args: argparse.Namespace) -> int:
    from textgym.rewards.discriminator import (
        model_samples,
        shuffled_words,
        task_references,
        train_discriminator,
    )
    from textgym.tasks import make_task

    options = {name: getattr(args, name) for name in DISC_OFFLINE_FIELDS}
    try:
        task = make_task(args.task)
        positives = task_references(task, args.split, args.limit)
        if args.negatives == "shuffled":
            negatives = shuffled_words(positives, seed=args.seed)
        else:
            negatives = model_samples(
                task,
                args.model,
                split=args.split,
                limit=args.limit,
                max_prompt_tokens=args.max_prompt_tokens,
                max_new_tokens=args.max_new_tokens,
                temperature=args.temperature,
                seed=args.seed,
                device=args.device,
            )
        disc, metrics = train_discriminator(
            positives,
            negatives,
            epochs=args.epochs,
            eval_fraction=args.eval_fraction,
            device=args.device,
            **options,
        )
    except (ValueError, OSError, KeyError) as exc:  # no references, bad encoder, unknown task
        print(f"textgym feedback train-disc: {exc}", file=sys.stderr)
        return 2
    disc.save_pretrained(args.out)
    counts = {"positives": len(positives), "negatives": len(negatives)}
    print(json.dumps({"saved": args.out, **counts, **metrics}, indent=2))
    return 0


def _stats(args: argparse.Namespace) -> int:
    from textgym.feedback.aggregate import agreement_report
    from textgym.feedback.store import FeedbackStore

    with FeedbackStore(args.db) as store:
        print(json.dumps(agreement_report(store), indent=2))
    return 0


def _export(args: argparse.Namespace) -> int:
    from textgym.feedback.formats import export_feedback
    from textgym.feedback.store import FeedbackStore, SchemaError

    try:
        with FeedbackStore(args.db) as store:
            count = export_feedback(store, args.out, args.format)
    except (OSError, SchemaError) as exc:
        print(f"textgym feedback export: {exc}", file=sys.stderr)
        return 2
    print(f"{count} {args.format} records written to {args.out}")
    return 0


def _import(args: argparse.Namespace) -> int:
    from textgym.feedback.formats import import_feedback
    from textgym.feedback.store import FeedbackStore, SchemaError

    try:
        with FeedbackStore(args.db) as store:
            counts = import_feedback(store, args.file, args.format, rater=args.rater)
    except (ValueError, OSError, SchemaError) as exc:  # RecordError: file, line and field
        print(f"textgym feedback import: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(counts))
    return 0
