"""``logocap synth``: write the synthetic multi-person keypoint benchmark (COCO format)."""
from __future__ import annotations

HELP = "generate the synthetic multi-person keypoint dataset (COCO json + images)"


def add_arguments(parser) -> None:
    parser.add_argument("--out", required=True, help="output folder (created; must be empty "
                        "unless --overwrite)")
    parser.add_argument("--preset", default="default",
                        help="easy (1-3 people, plain backgrounds) | default (1-8 people, clutter) "
                             "| crowd (overlapping groups, OCHuman-like)")
    parser.add_argument("--train", type=int, default=1000, help="number of training images")
    parser.add_argument("--val", type=int, default=200, help="number of validation images")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (>= 64)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same arguments -> same files)")
    parser.add_argument("--format", dest="ext", default="jpg", help="image format: jpg or png")
    parser.add_argument("--preview", action="store_true",
                        help="also write preview_{split}.png: 16 images with their ground truth drawn")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    from ..data.synthetic import generate_synthetic

    stats = generate_synthetic(args.out, preset=args.preset, num_train=args.train, num_val=args.val,
                               size=args.size, seed=args.seed, preview=args.preview,
                               overwrite=args.overwrite, ext=args.ext, progress=not args.quiet)
    for split in ("train", "val"):
        s = stats[split]
        if s["images"] == 0:
            continue
        print(f"{split}: {s['images']} images, {s['people']} people "
              f"({s['people_per_image']:.2f}/image, {s['people_ignored']} ignore regions), "
              f"height {s['height_fraction_min']:.2f}-{s['height_fraction_max']:.2f} of the image "
              f"(mean {s['height_fraction_mean']:.2f}), occluded {s['occluded_fraction_of_labelled']:.1%} "
              f"of labelled joints, unlabelled {s['unlabelled_fraction']:.1%}, "
              f"IoU>0.5 pairs {s['iou50_pairs_per_image']:.2f}/image")
    print(f"speed: {stats['images_per_second']:.1f} images/s (render + encode + write, one process)")
    print(f"wrote {args.out} (statistics in stats.json)")
    if args.preview:
        print("previews: " + ", ".join(f"preview_{s}.png" for s in ("train", "val") if stats[s]["images"]))
    return 0
