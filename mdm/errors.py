"""One exception type for bad user input: raised before any compute, with a one-line message."""


class ConfigError(ValueError):
    """Invalid configuration. The message names where (file / key path), what was given and what is allowed."""

    def __init__(self, where: str, problem: str):
        self.where, self.problem = where, problem
        super().__init__(f"{where}: {problem}" if where else problem)
