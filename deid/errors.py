"""The project's exception hierarchy, with one root:

    PipelineError
    ├── ConfigError   options rejected before the run starts (the launcher exits with status 2)
    └── DeidError     one input sent to the dead-letter output (UnsupportedFormatError, ...)
        └── OutOfSpaceError  the exception: no space left to write; never a record, the run
                             fails instead (the launcher exits with status 1)

Every failure that sends an input to the dead-letter output is a `DeidError`. Its `error_kind` is the
`error_kind` field of the dead-letter record and the name of its Beam counter. Messages say what is
wrong and what to do, and never carry a value read from an input (no PHI in messages): name tags,
keywords, sizes and offsets, not element values or file names. Errors about a remote service carry
its HTTP status as a field (`status`); code decides on that field, never on the message text.
"""

from __future__ import annotations

# The one line the launcher prints (after "error: ") when a disk fills up.
NO_SPACE_MESSAGE = (
    "no space left on OUTPUT (or on the scratch disk): the run stopped; nothing partial was published "
    "and this run's temporary files were removed. Free space, then run again into the same OUTPUT"
)


class PipelineError(Exception):
    """The root of the project's own exceptions."""


class DeidError(PipelineError):
    """Base class of per-input failures: an input that cannot be de-identified as configured."""

    error_kind = "deid_error"

    def __repr__(self) -> str:
        # Beam's with_exception_handling hands the dead-letter branch repr(exc): keep it the message.
        return str(self)


class UnsupportedFormatError(DeidError):
    """The input is neither DICOM nor a whole-slide image this pipeline reads."""

    error_kind = "unsupported_format"


class InvalidInputError(DeidError):
    """The input claims a supported format but is truncated, empty or malformed."""

    error_kind = "invalid_input"


class InputTooLargeError(DeidError):
    """A declared size exceeds a configured limit (`--max_pixels`, `--max_file_bytes`)."""

    error_kind = "too_large"


class BurnedInAnnotationError(DeidError):
    """Pixel data may show identifying text and no pixel redaction is configured."""

    error_kind = "burned_in_annotation"


class SlideReadError(DeidError):
    """OpenSlide (or the raw tile reader) could not open or read a whole-slide image."""

    error_kind = "slide_unreadable"


class ProfileError(DeidError):
    """The profile could not be applied while keeping the output a valid instance."""

    error_kind = "profile_error"


class LeakDetectedError(DeidError):
    """An identifying value of the input was found in an output."""

    error_kind = "leak"


class ConfigError(PipelineError):
    """Pipeline options are missing, malformed or inconsistent; raised before the run starts."""


class UnexpectedError(DeidError):
    """A failure outside the known kinds; the message names only the exception type."""

    error_kind = "unexpected_error"


def safe_message_for(exc_type: type[BaseException], exc_repr: str) -> tuple[str, str]:
    """(error_kind, message) for a dead-letter record, from the (type, repr) pair Beam's dead-letter
    branch carries, without leaking input values.

    Our own errors carry messages written to be PHI-free. Third-party exception texts can quote
    values read from the input (pydicom does, for invalid values), so only their type is kept.
    """
    if issubclass(exc_type, DeidError):
        return exc_type.error_kind, exc_repr
    return UnexpectedError.error_kind, _unexpected(exc_type)


def _unexpected(exc_type: type[BaseException]) -> str:
    return (
        f"unexpected {exc_type.__name__} while processing this input (its text is withheld because "
        "it may quote input values); report it with the input_sha256 of this record"
    )


class PixelDecodeError(DeidError):
    """Pixel data could not be decoded or re-encoded for pixel redaction (no decoder, bad frames)."""

    error_kind = "pixel_decode"


class OcrUnavailableError(DeidError):
    """`--redact_text ocr` needs the tesseract program, which is missing or failed to run."""

    error_kind = "ocr_unavailable"


class UidConflictError(DeidError):
    """Two different inputs would be published under one output path (the same SOPInstanceUID with
    different content); the one not chosen by the documented rule is refused, never overwritten."""

    error_kind = "uid_conflict"


class NotARegularFileError(DeidError):
    """A listed input is a FIFO, socket or device: it is skipped unread (reading could block forever)."""

    error_kind = "not_a_regular_file"


class UnreadableInputError(DeidError):
    """A listed input could not be read (permissions, vanished); its record names it by a keyed hash
    of its path relative to --input, since its bytes could not be hashed."""

    error_kind = "unreadable"


class UnreadableDirectoryError(DeidError):
    """A directory under --input could not be listed, so the files in it were never seen; its record
    names it by a keyed hash of its path relative to --input."""

    error_kind = "unreadable_directory"


class OutOfSpaceError(DeidError):
    """No space left on OUTPUT or the scratch disk. Not a failure of one input: the run stops (exit 1)
    and nothing partial is published. It is a DeidError only so that per-input handlers carry its kind
    through (a tile's failure record, a slide's check); `transforms.common` turns it back into a
    failure of the run wherever it would become a dead letter."""

    error_kind = "no_space"

    def __init__(self, message: str = NO_SPACE_MESSAGE) -> None:
        super().__init__(message)
