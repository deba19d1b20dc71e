"""`lunarseg train`, `lunarseg evaluate` and `lunarseg compress` (TensorFlow is imported inside the handlers)."""
from __future__ import annotations

import argparse
import json


def register(sub) -> None:
    """Add this layer's subcommands to the top-level parser."""
    p = sub.add_parser("train", help="train the U-Net on a dataset root (synthetic or the Kaggle layout)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", required=True, help="dataset root (images/render + images/clean)")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--size", default="128", help="model input WIDTHxHEIGHT or one number for square")
    p.add_argument("--filters", type=int, default=16)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--task", default="binary", help="binary | 4class")
    p.add_argument("--loss", default="bce-dice", help="bce | bce-dice")
    p.add_argument("--colour", default="gray", help="gray | rgb")
    p.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate (cosine-decayed)")
    p.add_argument("--patience", type=int, default=6, help="early-stopping patience in epochs")
    p.add_argument("--no-batchnorm", action="store_true")
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--max-frames", type=int, default=0, help="cap frames per split (0 = all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--strategy", default="default", help="default | mirrored | multi-worker (reads TF_CONFIG)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.set_defaults(func=_train)

    e = sub.add_parser("evaluate", help="score a model (.keras, .onnx, .tflite) on a labelled split")
    e.add_argument("model", help="run directory, .keras, .onnx or .tflite file")
    e.add_argument("--data", required=True)
    e.add_argument("--split", default="test", help="train | val | test")
    e.add_argument("--out", help="directory for the JSON report and the best/worst overlay grid")
    e.add_argument("--max-frames", type=int, default=0)
    e.set_defaults(func=_evaluate)


def config_from_args(args):
    from lunarseg.train.config import TrainConfig, parse_size

    width, height = parse_size(args.size)
    return TrainConfig(width=width, height=height, depth=args.depth, filters=args.filters, colour_mode=args.colour,
                       task=args.task, batchnorm=not args.no_batchnorm, dropout=args.dropout, loss=args.loss,
                       epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr, patience=args.patience,
                       augment=not args.no_augment, seed=args.seed, strategy=args.strategy,
                       max_frames=args.max_frames).validate()


def _train(args) -> int:
    cfg = config_from_args(args)
    from lunarseg.train.fit import train

    summary = train(cfg, args.data, args.out, resume=args.resume, verbose=1)
    val = summary.get("val", {})
    print(f"trained {summary['epochs']} epochs (best {summary['best_epoch']}), val IoU {val.get('iou', 0):.4f} "
          f"Dice {val.get('dice', 0):.4f} at threshold {summary['threshold']}, "
          f"{summary['train_images_per_s']} images/s")
    print(f"model: {summary['model']}")
    return 0


def _evaluate(args) -> int:
    from lunarseg.train.evaluate import evaluate

    report = evaluate(args.model, args.data, split=args.split, out_dir=args.out, max_frames=args.max_frames)
    keys = ("iou", "dice", "precision", "recall", "miou")
    print(" ".join(f"{k}={report[k]:.4f}" for k in keys if k in report) + f" frames={report['frames']}")
    if "per_class_iou" in report:
        print("per-class IoU: " + json.dumps({k: round(v, 4) for k, v in report["per_class_iou"].items()}))
    if args.out:
        print(f"report: {report['report']}\ngrid: {report['grid']}")
    return 0
