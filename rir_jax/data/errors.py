"""The one exception the data package raises for every user-facing problem."""
from rir_jax.errors import one_line


class DataError(ValueError):
  """A problem the user can fix: bad name, missing or corrupt files, data not prepared.

  The message is always one line saying what is wrong and what to do, so that
  command-line tools can print it and exit with status 2 instead of a traceback.
  """

  def __init__(self, message: str):
    super().__init__(one_line(message))
