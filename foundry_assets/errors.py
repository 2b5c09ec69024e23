"""The foundry's few error types. Each also carries the built-in meaning callers already catch."""


class FoundryError(Exception):
    """Base of every error the foundry raises on purpose."""


class ManifestError(FoundryError, ValueError):
    """A training manifest is missing, unreadable or invalid; the message names the field and the fix."""


class DataError(FoundryError, ValueError):
    """A data drop cannot be used as it is (missing file, malformed record, shape unfit for the strategy)."""


class HardwareIncompatibleError(FoundryError, RuntimeError):
    """The node cannot run the requested training method; raised before any model is loaded."""


class UnknownStrategyError(FoundryError, KeyError):
    """A name that is not in a registry; the message lists the registered names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class TrainingError(FoundryError, RuntimeError):
    """Training could not run or produced no usable adapter."""


class MergeError(FoundryError, RuntimeError):
    """A merge could not be configured or run."""


class PublishError(FoundryError, RuntimeError):
    """Publishing failed or was refused (for example a tag that already holds different content)."""


class AuditError(FoundryError, ValueError):
    """The audit trail is broken: a record was edited, removed or reordered."""


class SigningError(FoundryError, ValueError):
    """A release cannot be signed as asked (wrong passphrase, unencrypted key, untrusted signer, empty reason), or the
    trusted-signers file is missing or invalid; the message names the file or field and the fix."""


class ExamError(FoundryError, RuntimeError):
    """The exam cannot run as the manifest asks (e.g. its champion cannot be fetched or verified)."""
