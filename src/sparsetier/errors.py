"""User-facing errors: the CLI prints them as one line and exits with code 2; the server
turns them into 4xx replies. Anything else escaping is a bug."""


class SparsetierError(Exception):
    """A problem with the user's input (file, model, request, budget), not with sparsetier."""


class ModelFileError(SparsetierError):
    """A model file is missing, truncated, corrupt or not in a format we read."""


class UnsupportedModelError(SparsetierError):
    """A well-formed model whose architecture or tensor type sparsetier does not run."""


class ContextLengthError(SparsetierError):
    """A prompt (plus the tokens asked for) does not fit the context window."""
