"""The training process of ``qfk train``: register the kit's plugin, add its callbacks, run
LLaMA-Factory's ``run_exp``, post-process. Runs the same on every torchrun rank.

Exit status: 0 done; 1 the run failed (LLaMA-Factory raised, or the loss became nan/inf);
2 the recipe could not be read; 130 stopped on request (a checkpoint was saved: run the same
command again to resume).
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
from pathlib import Path


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip() + "\n\nusage: python -m qwen_factory_kit.launch recipe.yaml [key=value ...]")
        return 0 if argv else 2
    os.environ.setdefault("DISABLE_VERSION_CHECK", "1")
    from ..errors import QfkError
    from ..recipe.document import load_recipe

    recipe, overrides = argv[0], argv[1:]
    try:
        args = load_recipe(recipe, overrides)
    except QfkError as exc:
        print(f"error: {exc.message}" + (f"\n  hint: {exc.hint}" if exc.hint else ""), file=sys.stderr)
        return 2

    from llamafactory.train.tuner import run_exp

    from ..lfbridge import fast_tokenizer_fingerprint
    from ..post.training import summarize
    from . import plugin
    from .callbacks import PredictMeter, QfkCallback, StopRequest, emit
    from .record import RunRecord, is_rank_zero

    plugin.register()
    fast_tokenizer_fingerprint()
    stop = StopRequest()

    def on_sigint(signum, frame):  # first Ctrl-C: finish the step, save, stop; second: abort
        if stop.signalled:
            raise KeyboardInterrupt
        stop.signalled = True
        print("[qfk] stopping after this step (a checkpoint is saved); Ctrl-C again aborts", file=sys.stderr)

    signal.signal(signal.SIGINT, on_sigint)
    record = RunRecord(recipe, overrides, args, [sys.argv[0], *argv] if sys.argv else argv)
    record.start()
    meter = PredictMeter().install() if _predicts(args) else None
    callback = QfkCallback(record, stop, meter)
    try:
        run_exp(dict(args), callbacks=[callback])
    except KeyboardInterrupt:
        record.finish("aborted", error="aborted by a second Ctrl-C; the last saved checkpoint is kept")
        return 130
    except BaseException as exc:  # noqa: BLE001 - the run failed: record why, exit non-zero
        record.finish("failed", error=f"{type(exc).__name__}: {exc}")
        traceback.print_exc()
        if is_rank_zero():
            emit({"event": "failed", "error": f"{type(exc).__name__}: {exc}"})
        return 1
    finally:
        if meter is not None:
            meter.uninstall()

    if callback.nonfinite_at is not None:
        status = "failed"
    elif callback.stopped_at is not None:
        status = "stopped"
    else:
        status = "ok"
    if is_rank_zero():
        summary = summarize(args.get("output_dir", "."), callback.log_history or None, status=status,
                            plot=True, title=f"{Path(str(args.get('model_name_or_path'))).name} {args.get('finetuning_type', 'lora')} "
                                  f"{args.get('stage', 'sft')} on {args.get('dataset', '')}")
        extra = {"summary": summary, "stopped_at_step": callback.stopped_at, "nonfinite_loss_at_step": callback.nonfinite_at}
        record.finish(status, **extra)
        emit({"event": "end", "status": status, "summary": summary})
    if status == "failed":
        print(f"[qfk] the loss became nan/inf at step {callback.nonfinite_at}: the run failed", file=sys.stderr)
        return 1
    return 130 if status == "stopped" else 0


def _predicts(args: dict) -> bool:
    """A predict run (generation over the eval dataset): its progress is counted."""
    return str(args.get("do_predict")).lower() == "true" and str(args.get("predict_with_generate")).lower() == "true"
