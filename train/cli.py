"""`lunarseg train`, `lunarseg import`, `lunarseg evaluate` and `lunarseg compress` (TensorFlow is imported
inside the handlers)."""
from __future__ import annotations

import argparse
import json


def register(sub) -> None:
    """Add this layer's subcommands to the top-level parser."""
    _register_train(sub)
    _register_import(sub)
    _register_evaluate(sub)
    _register_compress(sub)


class DefaultsShown(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's default in its help, except where there is none (required options, None)."""

    def _get_help_string(self, action):
        if action.required or action.default is None:
            return action.help
        return super()._get_help_string(action)


def _register_train(sub) -> None:
    """`lunarseg train`: the model's shape and the training recipe (TrainConfig's fields)."""
    from lunarseg.data.loader import COLOUR_MODES
    from lunarseg.runtime.masks import CLASS_NAMES
    from lunarseg.train.config import ARCHITECTURES, LOSSES, LR_SCHEDULES, STRATEGIES, THRESHOLD_RULES

    p = sub.add_parser("train", help="train the U-Net on a dataset root (synthetic or the Kaggle layout)",
                       formatter_class=DefaultsShown)
    p.add_argument("--data", required=True, help="dataset root (images/render + images/clean)")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--epochs", type=int, default=20, help="training epochs (the most, with early stopping)")
    p.add_argument("--batch-size", type=int, default=16, help="frames (or crops) per optimizer step")
    p.add_argument("--size", default="128", help="model input WIDTHxHEIGHT or one number for square")
    p.add_argument("--filters", type=int, default=16, help="channels of the first level (doubling per level)")
    p.add_argument("--depth", type=int, default=4, help="down-sampling levels of the U-Net")
    p.add_argument("--task", default="binary", help=" | ".join(CLASS_NAMES))
    p.add_argument("--loss", default="bce-dice", choices=LOSSES, help="pixel loss (+ region term)")
    p.add_argument("--arch", default="unet", choices=ARCHITECTURES,
                   help="unet: 3x3 convolutions; ds-unet: depthwise-separable below full resolution")
    p.add_argument("--stem-stride", type=int, default=1,
                   help="a strided stem: the U-Net runs at 1/S of the input's resolution (1 = none; 4 is the "
                   "fast edge model: no layer at full resolution)")
    p.add_argument("--crop", default="0", help="train on random crops WIDTHxHEIGHT of the --size frames "
                   "(0 = whole frames): finer scale at the cost of one crop per step")
    p.add_argument("--colour", default="gray", help=" | ".join(COLOUR_MODES))
    p.add_argument("--threshold-rule", default="iou", choices=THRESHOLD_RULES,
                   help="how the threshold is chosen on val: iou = best pixel rock IoU; rocks-f2 = best "
                   "object-level F2 of rocks found and blobs right (a miss weighs 4x a false blob)")
    p.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate (the peak, with a schedule)")
    p.add_argument("--lr-schedule", default="cosine", choices=LR_SCHEDULES,
                   help="cosine: decays to 5 %% over the run; one-cycle: a linear warm-up from a tenth of --lr over "
                   "the first tenth of the steps, then the cosine decay; constant")
    p.add_argument("--patience", type=int, default=6, help="early-stopping patience in epochs")
    p.add_argument("--no-batchnorm", action="store_true")
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--rotate", action="store_true", help="also augment with vertical flips and 90° rotations")
    p.add_argument("--max-frames", type=int, default=0, help="cap frames per split (0 = all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--strategy", default="default", help=" | ".join(STRATEGIES) + " (multi-worker reads TF_CONFIG)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.set_defaults(func=_train)


def _register_evaluate(sub) -> None:
    """`lunarseg evaluate`: any model form on a labelled split."""
    from lunarseg.data.splits import SPLIT_NAMES

    e = sub.add_parser("evaluate", help="score a model (run, .keras, .h5, .onnx, .tflite) on a labelled split")
    e.add_argument("model", help="run directory, .keras/.h5 with meta.json beside it, or an exported .onnx/.tflite "
                   "(a model trained elsewhere: lunarseg import it first)")
    e.add_argument("--data", required=True)
    e.add_argument("--split", default="test", help=" | ".join((*SPLIT_NAMES, "all", "real")) + " (real: the dataset's "
                   "real_moon_images/ photos with their g_ masks; default test)")
    e.add_argument("--out", help="directory for the JSON report and the best/worst overlay grid")
    e.add_argument("--max-frames", type=int, default=0, help="score at most this many frames (0 = all)")
    e.set_defaults(func=_evaluate)


def _register_compress(sub) -> None:
    """`lunarseg compress`: one variant from the options (CompressConfig's fields), or --all of them."""
    c = sub.add_parser("compress", help="prune / quantization-aware fine-tune a trained run into variants",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    c.add_argument("run", help="run directory holding model.keras + meta.json")
    c.add_argument("--sparsity", type=float, default=0.5, help="target weight sparsity in [0, 0.99] (0 = no pruning)")
    c.add_argument("--schedule", default="polynomial", help="polynomial | constant")
    c.add_argument("--structure", default="unstructured", help="unstructured | 2:4")
    c.add_argument("--width", type=float, default=1.0, help="structured channel pruning: share of every layer's "
                   "channels to keep, e.g. 0.5 = a quarter of the MACs (default 1 = off)")
    c.add_argument("--epochs", type=int, default=None, help="fine-tune epochs after slimming / during pruning "
                   "(default: 4; with --all each variant's own: 12 for pruned75, 16 for slim50 and slim40)")
    c.add_argument("--qat", action="store_true", help="quantization-aware training after pruning")
    c.add_argument("--preserve-sparsity", action="store_true", help="pruning-preserving QAT (keeps the zeros)")
    c.add_argument("--qat-epochs", type=int, default=2)
    c.add_argument("--clusters", type=int, default=0, help="weight clustering after pruning: at most this many "
                   "distinct values per kernel, zeros kept (0 = off; the default set uses 8)")
    c.add_argument("--cluster-epochs", type=int, default=2, help="fine-tune epochs of the clustering phase")
    c.add_argument("--lr", type=float, default=None, help="fine-tune learning rate (default: 1e-3; with --all each "
                   "variant's own: 3e-3 for pruned75 and slim50, 1e-2 for slim40)")
    c.add_argument("--lr-schedule", default=None, help="constant | cosine, of the slim/prune phase (default: constant; "
                   "with --all each variant's own: cosine for pruned75, slim50 and slim40)")
    c.add_argument("--continue-rate", action="store_true", help="fine-tune at the constant rate the trained "
                   "model's weights were trained at (its best epoch's lr in history.csv), as the dense control dense-ft does; "
                   "--lr when the run has no history")
    c.add_argument("--distill", type=float, default=None,
                   help="knowledge distillation from the trained model: weight of its soft targets (0 = off; "
                        "default: each variant's own, see `compress --all`)")
    c.add_argument("--batch-size", type=int, default=16)
    c.add_argument("--name", default="", help="variant name (default from the options, e.g. pruned50-pqat)")
    c.add_argument("--data", help="fine-tuning dataset root (default: the one recorded at training)")
    c.add_argument("--max-frames", type=int, default=0)
    c.add_argument("--all", action="store_true", help="make the default set: pruned50, pruned75, qat, pruned50-pqat, slim50, slim40, pruned50-c8 and the dense control dense-ft")
    c.add_argument("--force", action="store_true", help="start over: remake existing variants (--all) and drop "
                   "an interrupted fine-tune's checkpoints")
    c.add_argument("--resume", action="store_true", help="continue interrupted fine-tunes from their next epoch")
    c.add_argument("--no-reuse", dest="reuse", action="store_false", help="run every phase of a variant even when a "
                   "finished variant of the same run and data ran its first phases with the same settings (by default "
                   "pruned50-c8 and pruned50-pqat start from a finished pruned50, also with --force)")
    c.add_argument("--report", action="store_true", help="only print the table of existing variants (refused "
                   "with options that make a variant)")
    # Each option's flag and default, so --report can name the ones given with it (argparse keeps no record).
    c.set_defaults(func=_compress, option_defaults={a.dest: (a.option_strings[0], a.default) for a in c._actions
                                                    if a.option_strings and a.dest not in ("help", "report")})


def _register_import(sub) -> None:
    """`lunarseg import`: a foreign Keras model's task, classes, colour, size and normalisation."""
    from lunarseg.train.importer import COLOURS, HEADS

    i = sub.add_parser("import", help="turn a Keras model trained elsewhere (.h5, .keras of tf_keras or Keras 3, "
                       "SavedModel) into a run directory the other commands accept")
    i.add_argument("model", help=".h5 / .keras file or SavedModel directory")
    i.add_argument("--out", required=True, help="run directory to write (model.keras + meta.json)")
    i.add_argument("--task", choices=sorted(HEADS), help="default: from the head (1 sigmoid channel = binary, "
                   "4 softmax channels = 4class)")
    i.add_argument("--classes", help="class names in output-channel order, comma-separated (default: the task's: "
                   "background,rock or background,sky,small_rock,large_rock)")
    i.add_argument("--rock-classes", help="a check, comma-separated: the classes you expect to count as rock "
                   "(lunarseg counts the classes named '*rock*', else every class but the first)")
    i.add_argument("--colour", choices=sorted(COLOURS.values()), help="default: from the input channels (1 gray, 3 rgb)")
    i.add_argument("--size", help="input WIDTHxHEIGHT, for models that take any size")
    i.add_argument("--scale", type=float, help="model input = pixel (0-255) * scale + offset (default 1/255)")
    i.add_argument("--offset", type=float, help="see --scale (default 0)")
    i.add_argument("--mean", type=float, help="model input = (pixel / 255 - mean) / std, mean and std on the 0-1 "
                   "scale (instead of --scale/--offset)")
    i.add_argument("--std", type=float, help="see --mean")
    i.add_argument("--threshold", type=float, default=None, help="rock probability threshold of a sigmoid head "
                   "(default 0.5; refused for a softmax head)")
    i.set_defaults(func=_import)


def _split_names(text):
    return [n.strip() for n in text.split(",") if n.strip()] if text else None


def _import(args) -> int:
    from lunarseg.runtime.errors import ConfigError
    from lunarseg.data.cli import parse_size
    from lunarseg.train.importer import ImportOptions, import_model
    from lunarseg.train.tf_env import import_tensorflow_quietly

    try:  # core/cli.py's TENSORFLOW_COMMANDS does this for the other TensorFlow subcommands
        import_tensorflow_quietly()
        import tf_keras  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"needs TensorFlow ({exc.name or 'tensorflow'} is not installed): pip install 'lunarseg[train]'") from None
    opts = ImportOptions(task=args.task, classes=_split_names(args.classes), rock_classes=_split_names(args.rock_classes),
                         colour=args.colour, size=parse_size(args.size, min_side=1, square_ok=True) if args.size else None, scale=args.scale,
                         offset=args.offset, mean=args.mean, std=args.std, threshold=args.threshold)
    s = import_model(args.model, args.out, opts)
    norm = s["normalisation"]
    print(f"imported {s['source']['format']} (Keras {s['source']['keras_major']}) as {s['task']} "
          f"({','.join(s['classes'])}), input {s['input']} {s['colour']}, {s['activation']} head, "
          f"input = pixel * {norm['scale']:.6g} + {norm['offset']:.6g}; validation IoU unknown until evaluated")
    print(f"run: {s['run']}\nmodel: {s['model']}")
    return 0


def config_from_args(args):
    from lunarseg.data.cli import parse_size
    from lunarseg.train.config import TrainConfig

    width, height = parse_size(args.size, min_side=1, square_ok=True)
    crop = (0, 0) if args.crop in ("0", "") else parse_size(args.crop, "--crop", min_side=1, square_ok=True)
    return TrainConfig(width=width, height=height, arch=args.arch, stem_stride=args.stem_stride, crop_width=crop[0], crop_height=crop[1], depth=args.depth, filters=args.filters, colour_mode=args.colour,
                       task=args.task, batchnorm=not args.no_batchnorm, dropout=args.dropout, loss=args.loss,
                       epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr, lr_schedule=args.lr_schedule,
                       patience=args.patience, augment=not args.no_augment, rotate=args.rotate, seed=args.seed, strategy=args.strategy,
                       max_frames=args.max_frames, threshold_rule=args.threshold_rule).validate()


def _train(args) -> int:
    cfg = config_from_args(args)
    from lunarseg.train.fit import train

    summary = train(cfg, args.data, args.out, resume=args.resume, verbose=1)
    if summary.get("chief") is False:
        print(f"{summary['worker']} finished {summary['epochs']} epochs; the chief (worker 0) writes the run")
        return 0
    val = summary.get("val", {})
    print(f"trained {summary['epochs']} epochs (best {summary['best_epoch']}), val IoU {val.get('iou', 0):.4f} "
          f"Dice {val.get('dice', 0):.4f} at threshold {summary['threshold']}, "
          f"{summary['train_images_per_s']} images/s")
    print(f"model: {summary['model']}")
    return 0


def _evaluate(args) -> int:
    from lunarseg.runtime.errors import require_at_least, require_folder_or_absent
    from lunarseg.runtime.objects import describe_objects
    from lunarseg.train.evaluate import describe_operating_points, describe_recall_by_size, evaluate

    require_at_least("--max-frames", args.max_frames, 0)
    if args.out:
        require_folder_or_absent(args.out)
    report = evaluate(args.model, args.data, split=args.split, out_dir=args.out, max_frames=args.max_frames)
    keys = ("iou", "dice", "precision", "recall", "miou")
    print(" ".join(f"{k}={report[k]:.4f}" for k in keys if k in report) + f" frames={report['frames']}")
    if "per_class_iou" in report:
        print("per-class IoU: " + json.dumps({k: round(v, 4) for k, v in report["per_class_iou"].items()}))
    print(describe_recall_by_size(report["recall_by_rock_size"]))
    print(describe_objects(report["objects"]))
    if report["operating_points"]:
        print(describe_operating_points(report["operating_points"]))
    if args.out:
        print(f"report: {report['report']}\ngrid: {report['grid']}")
    return 0


def compress_configs(args) -> list:
    """The variants a `compress` command asks for. Options given on the command line override every
    variant; with --all, the others keep each default variant's own (e.g. slim50's longer fine-tune)."""
    import dataclasses

    from lunarseg.train.checkpoint import variant_dirs
    from lunarseg.train.compress import DEFAULT_VARIANTS, CompressConfig

    common = dict(batch_size=args.batch_size, qat_epochs=args.qat_epochs, max_frames=args.max_frames)
    common.update({k: v for k, v in (("epochs", args.epochs), ("distill", args.distill), ("learning_rate", args.lr),
                                     ("lr_schedule", args.lr_schedule)) if v is not None})
    if args.continue_rate or args.lr is not None or args.lr_schedule is not None:  # a rate asked for is every variant's, the control's too
        common["continue_rate"] = args.continue_rate
    if args.all:
        done = {d.name for d in variant_dirs(args.run)}
        configs = [dataclasses.replace(v, **common) for v in DEFAULT_VARIANTS]
        return [c for c in configs if args.force or c.variant not in done]
    return [CompressConfig(sparsity=args.sparsity, schedule=args.schedule, structure=args.structure, width=args.width,
                           qat=args.qat, preserve_sparsity=args.preserve_sparsity, clusters=args.clusters,
                           cluster_epochs=args.cluster_epochs, name=args.name, **common)]


def _compress(args) -> int:
    """Make the variants asked for (unless --report), then print the table of every variant."""
    from lunarseg.train.compress import format_report, report_rows, skipped_variants

    if args.report:
        ignored = [flag for dest, (flag, default) in args.option_defaults.items() if getattr(args, dest) != default]
        if ignored:
            from lunarseg.runtime.errors import ConfigError

            raise ConfigError(f"--report only prints the table; it makes no variant, so {', '.join(ignored)} "
                              "would be ignored: drop them, or drop --report")
    else:
        _make_variants(args)
    print(format_report(report_rows(args.run)))
    for line in skipped_variants(args.run):
        print(line)
    return 0


def _make_variants(args) -> None:
    """Fine-tune each requested variant and print its result. With --all: skip (saying why) what does
    not apply to the run's graph, and with --resume continue only the variants that were interrupted."""
    from lunarseg.train.checkpoint import resolve_model
    from lunarseg.train.compress import applicable, compress

    configs = compress_configs(args)
    for cfg in configs:
        cfg.validate()
    variants_root = resolve_model(args.run)[0].parent / "compressed"
    if args.all:
        configs, skipped = applicable(args.run, configs)
        for variant, reason in skipped:
            print(f"skipped {variant}: {reason}")
    for cfg in configs:
        interrupted = (variants_root / cfg.variant / "checkpoints" / "state.json").exists()
        resume = args.resume and (interrupted or not args.all)
        s = compress(args.run, cfg, data_dir=args.data, verbose=1, resume=resume, force=args.force, reuse=args.reuse)
        since = f" after {s['continued_from']}" if s.get("continued_from") else ""
        print(f"{s['variant']}: sparsity {s['sparsity']:.3f}, val IoU {s['val_iou_before']:.4f} -> "
              f"{s['val_iou_after']:.4f} ({-s['iou_drop']:+.4f}), {s['seconds']} s{since}")
