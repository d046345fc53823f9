"""The run's last phase (`finish`): its final scores, models, threshold and
TensorBoard extras, and its closing lines."""

from __future__ import annotations

from siamese_research import artifacts
from siamese_research.config import Config
from siamese_research.runner.fit import RunResult
from siamese_research.runner.session import Session, say
from siamese_research.runner.setup import Data, Setup
from siamese_research.summaries import extras, projector
from siamese_research.summaries import views as summaries


def finish(config: Config, setup: Setup, data: Data, session: Session,
           result: RunResult) -> None:
    """Validation scores into `result`; on the chief, the run's files."""
    trainer = session.trainer
    if data.validation is not None:
        # The last epoch's validation scored these weights already (no
        # callback here changes them after it); a run that trained nothing
        # here scores them now (every worker: the eval step's gather is a
        # collective).
        scored_at, predictions = trainer.validation_scores
        if scored_at != result["step"]:
            _, predictions = trainer.evaluate(data.validation)
        result.update(validation_predictions=predictions)
    if setup.chief:
        write_outputs(config, data, session, result)
    trainer.flush()
    say(config, *final_words(config, result, trainer))


def write_outputs(config: Config, data: Data, session: Session,
                  result: RunResult) -> None:
    """model.keras, encoder.keras, the run graph, HParams and the projector:
    the validation pairs' encodings, or an image run's held-out images with
    their sprite (threshold.json is written at every epoch's end)."""
    trainer, trained = session.trainer, bool(result["history"]["epochs"])
    result.update(artifacts.save_models(trainer.model, config.run_dir))
    # As the train step traced it (a run that trained no step here traces
    # it now). (A resuming process drops an earlier copy: `events.cut_after`.)
    extras.write_branch_graph(session.writers[summaries.TRAIN],
                              trainer.step.branch_graph(data.train.element_spec))
    if trained:
        extras.write_hparams(None, config, dict(result["final"],
                                                max_sum_error=result["max_sum_error"]),
                             step=result["step"])
    held = data.pairs.images[1] if data.pairs.images is not None else None
    if held is not None and config.projector_points:
        projector.export_image_projector(config.run_dir, trainer.model, held,
                                         max_points=config.projector_points,
                                         seed=config.seed)
    elif data.validation is not None and config.projector_points:
        projector.export_validation_projector(config.run_dir, trainer.model,
                                              data.validation,
                                              max_points=config.projector_points)


def final_words(config: Config, result: dict, trainer) -> list:
    model, final = trainer.model, result.get("final", {})
    k = len(model.branches)
    branches = (f"{k} branches (tied: one encoder)" if model.tied else
                f"{k} branches (untied: one encoder each)")
    lines = [
        "",
        f"Parameters: {result['total_parameters']:,} total; encoder "
        f"{result['encoder_parameters']:,}, counted once, called by {branches}",
        "Final: " + ", ".join(f"{k} {v:.4f}" for k, v in final.items()
                              if k != "epoch" and isinstance(v, float)),
    ]
    err = trainer.last_sum_error
    if err is not None:
        lines.append(f"Branch check: {' + '.join(model.branches)} = total, max relative "
                     f"error {result['max_sum_error']:.1e} (last {err:.1e})")
    if "best_epoch" in result:
        lines.append(f"Best epoch: {result['best_epoch']} ({config.monitor} "
                     f"{result['best_value']:.4f}), saved as best.keras; model.keras is "
                     f"the last" + (" (stopped early: --patience)"
                                    if result.get("stopped_early") else ""))
    lines.append(f"Finished {result['step']} steps in {result['seconds']:.1f} s")
    lines.append(f"TensorBoard: tensorboard --logdir {config.run_dir}")
    return lines
