"""A quiet console for foundry runs: known third-party noise is turned off at its source, progress bars are off.

What a run prints is then the Dagster run log (stage by stage, the training loss every `logging_steps`) on stderr and
the CLI's summary on stdout. `FOUNDRY_VERBOSE=1` (`foundry run --verbose`) leaves every library as it is.

Turned off: progress bars of huggingface_hub, transformers ("Loading weights", "Writing model shards"), datasets
("Tokenizing train dataset") and any other tqdm bar; TRL's experimental-API notice for ORPO; torch's `_pytree`
notices about enums that Unsloth and torchao register; bitsandbytes' note that an optional CPU kernel is missing;
the Hugging Face Trainer's printed log dicts (the crucible records the same losses, see `crucible/trainer.py`).
"""

import logging
import os

VERBOSE_ENV = "FOUNDRY_VERBOSE"

_QUIET_ENV = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # also read by transformers for its own bars
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "TQDM_DISABLE": "1",  # tqdm >= 4.66 reads TQDM_* as defaults for every bar
    "TRL_EXPERIMENTAL_SILENCE": "1",
}
_QUIET_LOGGERS = (
    "torch.utils._pytree",
    "bitsandbytes",
    "bitsandbytes.cextension",
    "dagster.code_server",  # the start/stop lines of the code server `foundry run` loads the job from
)


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "").strip().lower() in ("1", "true", "yes")


def quiet_third_party() -> None:
    """Turn the known noise off for this process and the processes it starts (unless FOUNDRY_VERBOSE is set).

    Environment variables are only set where the operator has not set them; call before the libraries import.
    """
    if verbose():
        return
    for variable, value in _QUIET_ENV.items():
        os.environ.setdefault(variable, value)
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
