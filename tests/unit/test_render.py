"""What the CLI prints while it waits: a heartbeat line in a log that is not a terminal."""

from cli.render import Heartbeat


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_heartbeat_is_due_after_a_silence_of_its_interval_and_counts_as_printed():
    clock = Clock()
    beat = Heartbeat(every_s=60, enabled=True, clock=clock)
    clock.now = 59.9
    assert not beat.due()
    clock.now = 60.0
    assert beat.due()
    assert not beat.due()  # the line just due counts as printed
    clock.now = 119.9
    assert not beat.due()
    clock.now = 120.0
    assert beat.due()


def test_other_lines_postpone_the_heartbeat():
    clock = Clock()
    beat = Heartbeat(every_s=60, enabled=True, clock=clock)
    clock.now = 50.0
    beat.printed()  # e.g. a task finished and was printed
    clock.now = 100.0
    assert not beat.due()
    clock.now = 110.0
    assert beat.due()


def test_a_terminal_gets_no_heartbeat_lines():
    clock = Clock()
    beat = Heartbeat(every_s=60, enabled=False, clock=clock)
    clock.now = 3600.0
    assert not beat.due()
