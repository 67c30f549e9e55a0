"""The one exception type that reaches users as a clear, single-line message."""


class HpoError(Exception):
    """A problem the user can fix (bad spec, bad URL, unknown study, ...).

    The CLI prints it as one line and exits with ``exit_code``; nothing is written to the store
    before such an error is raised for bad input.
    """

    exit_code = 2

    def __init__(self, message: str) -> None:
        # Keep it to one line whatever the cause looked like.
        super().__init__(" ".join(str(message).split()))


class RuntimeLost(HpoError):
    """The Ray runtime a serve runs on is gone: not the user's input, so another exit code (3),
    for a supervisor to restart the serve."""

    exit_code = 3


class StudyMissing(HpoError):
    """hpo's job row is there but its Optuna study is not: it was deleted outside hpo
    (optuna-dashboard's trash icon, ``optuna delete-study``)."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"study {name!r} was deleted outside hpo (e.g. from optuna-dashboard); "
            f"`hpo delete {name} --yes` removes what is left"
        )
