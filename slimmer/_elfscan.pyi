Facts = tuple[int, bool, int, int, int, int, int, str | None, bool, tuple[str, ...], str | None,
              str | None, str | None, int]

def scan(path: str, /) -> Facts | None: ...
