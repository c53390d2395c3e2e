"""The ``dream-talk`` command line: ``speak``, ``track``, ``prepare``, ``train``, ``eval``, ``demo`` and ``smoke``, in
the one convention of :mod:`genblocks.cli`.

::

    dream-talk speak --audio speech.wav --image face.png --style happy.csv --out out/
    dream-talk speak --config paper --weights runs/emodiff/trained --lip-weights runs/lip/trained --audio a.wav ...
    dream-talk speak --audio speech.wav --image face.png --style talking_happily.mp4 --out out/
    dream-talk track --video clip.mp4 --out style/ [--smooth 1.5] [--neutral-frame 0]
    dream-talk prepare --videos MEAD/ --out data/mead [--layout mead|hdtf|flat] [--labels labels.csv] [--smooth 1]
    dream-talk train --config tiny --stage emodiff --out runs/emodiff [--resume] [--set train.manifest=data/mead/manifest.jsonl]
    dream-talk train --config tiny --stage lip --out runs/lip
    dream-talk eval --manifest data/mead/manifest.jsonl --weights runs/emodiff/trained --out eval/ [--limit 20]
    dream-talk demo --out outputs/dream-talk/demo [--audio speech.wav | --text "Hello there."]
    dream-talk smoke

Configs ship in ``dream_talk/configs/`` (``tiny``: random CPU sizes; ``paper``: the spec's defaults), one schema
(:class:`dream_talk.config.DreamTalkConfig`) for every command. ``speak`` writes ``motion.json``, ``motion.csv``,
the video with the input audio (``video.mp4``: the warped portrait or a learned renderer's frames; ``preview.mp4``:
portrait | proxy avatar, also the fallback when no face is found), ``curves.png`` and ``summary.json``; ``train`` writes genblocks' run folder
(``trained/`` is a pipeline folder for ``speak --weights``); ``demo`` also writes ``strip.png`` and
``README.txt``; ``track`` writes ``motion.json``, ``motion.csv`` and ``summary.json`` (frames, ``gap_frames``: how many
had no face and were interpolated); ``prepare`` writes ``audio/<id>.wav``, ``motion/<id>.json``, ``manifest.jsonl``
(the rows ``train.manifest`` and ``eval`` read) and ``summary.json`` (clips skipped with their reason), and skips the
clips a previous run on the same ``--out`` finished; ``eval`` writes ``metrics.json`` (blendshape L2, M-LMD / F-LMD,
the lip-sync proxy, style consistency, SyncNet with ``--syncnet``; per clip and mean) and ``motion/<id>.json``.
Bad input (missing, empty, silent or too-low-rate audio, an unreadable portrait or one without a face, a style
file with missing or unknown columns, an unreadable video or one with no face in any frame, a missing or empty
manifest or an unreadable row, a video folder in which no clip could be prepared) exits with status 2 and one line
naming it, before anything is written.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from genblocks.cli import Command, CommandLine, require_file, require_folder, smoke_command

if TYPE_CHECKING:
    from dream_talk.config import DreamTalkConfig

__all__ = ["command_line", "main"]

SCHEMA = "dream_talk.config:DreamTalkConfig"
GROUP = "generate"  # one schema: every command reads configs/


def _speak_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--audio", type=Path, required=True, metavar="FILE", help="speech (WAV, FLAC, MP3, MP4 audio)")
    parser.add_argument("--image", type=Path, required=True, metavar="FILE", help="the portrait")
    parser.add_argument(
        "--style",
        type=Path,
        default=None,
        metavar="FILE",
        help="emotion-style clip: .json, LiveLinkFace .csv, .npy, or a video of a face (tracked on the fly)",
    )
    parser.add_argument("--weights", type=Path, default=None, metavar="DIR", help="pipeline folder (a run's trained/)")
    parser.add_argument("--lip-weights", type=Path, default=None, metavar="DIR", help="the lip run's trained/")
    parser.add_argument("--fps", type=float, default=None, help="frame rate of the motion and video (motion.fps)")


def _speak(args: argparse.Namespace, config: DreamTalkConfig) -> int:
    require_file(args.audio, "--audio", "a speech file")
    require_file(args.image, "--image", "a portrait image")
    require_file(args.style, "--style", "an emotion-style clip (.json, .csv, .npy or a video)")
    require_folder(args.weights, "--weights", "a dream-talk pipeline folder")
    require_folder(args.lip_weights, "--lip-weights", "a dream-talk lip-stage trained/ folder")
    from dream_talk.inference import generate_files

    result = generate_files(
        config, args.audio, args.image, args.style, args.out, args.weights, args.lip_weights, fps=args.fps
    )
    for note in result.notes:
        print(f"dream-talk speak: {note}", file=sys.stderr)
    print(
        f"motion in {result.seconds:.2f} s; wrote {', '.join(sorted(p.name for p in result.files.values()))} to {args.out}"
    )
    return 0


def _track_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--video", type=Path, required=True, metavar="FILE", help="a video of one talking face")
    parser.add_argument("--fps", type=float, default=None, help="frame rate of the motion (default: the video's)")
    parser.add_argument(
        "--smooth", type=float, default=0.0, metavar="SIGMA", help="Gaussian smoothing over frames (0: none)"
    )
    parser.add_argument(
        "--neutral-frame",
        type=int,
        default=None,
        metavar="N",
        help="a frame with the person's relaxed face: expression and pose are measured from it, not from the proxy's "
        "template (default: the template; use the same choice for every clip a model trains on)",
    )


def _track(args: argparse.Namespace, config: None) -> int:
    require_file(args.video, "--video", "a video of a face")
    import json

    import numpy as np

    from dream_talk.tracking import track_video
    from genblocks.errors import InputError

    if args.smooth < 0:
        raise InputError(f"--smooth {args.smooth}: expected >= 0")
    try:
        result = track_video(args.video, fps=args.fps, smooth_sigma=args.smooth, neutral_frame=args.neutral_frame)
    except InputError as error:
        message = str(error)
        if message.startswith("neutral frame "):
            raise InputError("--neutral-frame " + message.removeprefix("neutral frame ")) from error
        raise InputError(f"--video {error}") from error
    except ImportError as error:
        raise InputError(
            f"--video {args.video}: tracking needs the face extra (pip install 'dream-talk[face]')"
        ) from error
    args.out.mkdir(parents=True, exist_ok=True)
    result.motion.write_json(args.out / "motion.json")
    result.motion.write_csv(args.out / "motion.csv")
    summary = {
        "frames": result.motion.num_frames,
        "fps": result.motion.fps,
        "gap_frames": result.num_gaps,
        "gap_frame_indices": result.gap_frames,
        "median_residual": float(np.nanmedian(result.residual)),
        "neutral_frame": args.neutral_frame,
        "files": ["motion.csv", "motion.json", "summary.json"],
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(
        f"tracked {result.motion.num_frames} frames ({result.num_gaps} without a face, interpolated); "
        f"wrote motion.json, motion.csv, summary.json to {args.out}"
    )
    return 0


def _prepare_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--videos", type=Path, required=True, metavar="DIR", help="the folder of talking-face videos")
    parser.add_argument(
        "--layout",
        choices=("mead", "hdtf", "flat"),
        default="mead",
        help="mead: <speaker>/video/front/<emotion>/level_<k>/<clip>.mp4; hdtf: <name>_<index>.mp4; flat: any video",
    )
    parser.add_argument(
        "--labels",
        type=Path,
        default=None,
        metavar="CSV",
        help="path,emotion,speaker rows (paths relative to --videos)",
    )
    parser.add_argument(
        "--smooth", type=float, default=0.0, metavar="SIGMA", help="Gaussian smoothing of the motion over frames"
    )
    parser.add_argument(
        "--neutral-frame",
        type=int,
        default=None,
        metavar="N",
        help="track every clip from its frame N's face, not the proxy's template (as track --neutral-frame; "
        "a clip whose frame N has no face is skipped)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")


def _prepare(args: argparse.Namespace, config: None) -> int:
    require_folder(args.videos, "--videos", "a folder of talking-face videos")
    require_file(args.labels, "--labels", "a CSV of path,emotion,speaker rows")
    from dream_talk.prepare import prepare_dataset

    result = prepare_dataset(
        args.videos,
        args.out,
        args.layout,
        args.labels,
        args.smooth,
        progress=not args.no_progress,
        neutral_frame=args.neutral_frame,
    )
    for skipped in result.skipped:
        print(f"dream-talk prepare: skipped {skipped['video']}: {skipped['reason']}", file=sys.stderr)
    print(
        f"{len(result.rows)} clips ({len(result.prepared)} new, {len(result.reused)} already done, "
        f"{len(result.skipped)} skipped); wrote {result.manifest} and summary.json"
    )
    return 0


def _train(args: argparse.Namespace, config: DreamTalkConfig) -> int:
    from dream_talk.training import train

    result = train(config, args.out, resume=args.resume)
    print(f"trained {result.global_step} steps ({config.train.stage}); weights in {result.trained}")
    return 0


def _eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", type=Path, required=True, metavar="FILE", help="a dream-talk prepare manifest")
    parser.add_argument("--weights", type=Path, default=None, metavar="DIR", help="pipeline folder (a run's trained/)")
    parser.add_argument("--lip-weights", type=Path, default=None, metavar="DIR", help="the lip run's trained/")
    parser.add_argument(
        "--syncnet",
        type=Path,
        default=None,
        metavar="FILE",
        help="TorchScript lip-sync expert: model(mouth_frames (1,T,3,H,W), audio (1,T,A)) -> (offset, confidence)",
    )
    parser.add_argument("--limit", type=int, default=None, metavar="N", help="evaluate only the first N rows")


def _eval(args: argparse.Namespace, config: DreamTalkConfig) -> int:
    require_file(args.manifest, "--manifest", "a JSONL manifest from dream-talk prepare")
    require_folder(args.weights, "--weights", "a dream-talk pipeline folder")
    require_folder(args.lip_weights, "--lip-weights", "a dream-talk lip-stage trained/ folder")
    require_file(args.syncnet, "--syncnet", "a TorchScript lip-sync model")
    from dream_talk.evaluation import evaluate_manifest, format_table

    result = evaluate_manifest(
        config, args.manifest, args.out, args.weights, args.lip_weights, args.syncnet, args.limit
    )
    print(format_table(result))
    print(f"wrote {result.path}")
    return 0


def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    speech = parser.add_mutually_exclusive_group()
    speech.add_argument(
        "--audio",
        type=Path,
        default=None,
        metavar="FILE",
        help="speech to use (default: a sentence spoken by eSpeak NG with the speech extra, else a synthetic signal)",
    )
    speech.add_argument(
        "--text",
        default=None,
        metavar="SENTENCE",
        help="a sentence for eSpeak NG to speak instead of the default (pip install 'dream-talk[speech]', GPL-3)",
    )


def _demo(args: argparse.Namespace, config: DreamTalkConfig) -> int:
    from genblocks.errors import InputError

    require_file(args.audio, "--audio", "a speech file")
    if args.text is not None and not args.text.strip():
        raise InputError("--text: expected a non-empty sentence to speak")
    from dream_talk.demo import run_demo

    summary = run_demo(config, args.out, args.audio, text=args.text)
    print(f"speech: {summary['speech']}")
    for key, value in summary["headline"].items():
        print(f"{key:<26} {value:.4g}")
    print(f"outputs: {args.out} ({', '.join(summary['files'])})")
    return 0


command_line = CommandLine(
    prog="dream-talk",
    package="dream_talk",
    description=(
        "Emotional audio-driven talking faces (DREAM-Talk, arXiv 2312.13578): EmoDiff diffusion over ARKit "
        "blendshapes + head pose from speech and an emotion-style clip, lip refinement, a proxy-avatar preview. "
        "Configs: dream_talk/configs/ (tiny, paper); --print-config shows the merged one."
    ),
    commands=(
        Command(
            "speak",
            "speech + portrait + emotion-style clip -> motion.json, motion.csv, video.mp4 (the warped portrait; "
            "preview.mp4 for render.kind=preview or without a face; with the audio), curves.png, summary.json in --out",
            _speak,
            schema=SCHEMA,
            config_group=GROUP,
            arguments=_speak_arguments,
        ),
        Command(
            "track",
            "a video of a face -> motion.json, motion.csv (blendshapes + head pose by inverting the proxy renderer on "
            "dlib's landmarks) and summary.json (gap_frames: frames without a face, interpolated) in --out",
            _track,
            out=None,
            arguments=_track_arguments,
        ),
        Command(
            "prepare",
            "a folder of videos (MEAD, HDTF or flat layout) -> audio/*.wav, motion/*.json (tracked at each video's "
            "frame rate), manifest.jsonl for train.manifest and eval, summary.json (skipped clips and why) in --out",
            _prepare,
            out=None,
            arguments=_prepare_arguments,
        ),
        Command(
            "train",
            "train EmoDiff (--stage emodiff) or the lip refiner (--stage lip) on train.manifest or synthetic windows; "
            "genblocks run folder in --out (trained/ for speak --weights)",
            _train,
            schema=SCHEMA,
            config_group=GROUP,
            out=None,
            stages=("emodiff", "lip"),
            resume=True,
        ),
        Command(
            "eval",
            "generate each manifest clip from its audio (style: another clip of its emotion) and compare with its "
            "tracked motion: metrics.json (blendshape L2, M-LMD/F-LMD, lip-sync proxy, style cosine, SyncNet)",
            _eval,
            schema=SCHEMA,
            config_group=GROUP,
            out=None,
            arguments=_eval_arguments,
        ),
        Command(
            "demo",
            "speech drives Grace Hopper's portrait with tiny random weights: video.mp4 (preview.mp4 without the "
            "face extra), curves.png, strip.png, motion files, summary.json, README.txt in --out",
            _demo,
            schema=SCHEMA,
            config_group=GROUP,
            arguments=_demo_arguments,
        ),
        smoke_command("dream_talk"),
    ),
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dream-talk`` script; returns the exit status (2 for bad input)."""
    return command_line.main(argv)


if __name__ == "__main__":
    sys.exit(main())
