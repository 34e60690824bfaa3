import os
import signal

import pytest

from smscool.processes import Stopped, stop_on_signals


def test_a_signal_raises_stopped_and_the_handlers_come_back():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Stopped) as stopped:
        with stop_on_signals():
            os.kill(os.getpid(), signal.SIGTERM)
            signal.sigtimedwait([], 0)  # let the handler run here
    assert stopped.value.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) == before


def test_a_signal_that_c_code_turned_into_another_error_still_leaves_as_stopped():
    with pytest.raises(Stopped) as stopped:
        with stop_on_signals():
            try:
                os.kill(os.getpid(), signal.SIGINT)
                signal.sigtimedwait([], 0)
            except Stopped:
                # As confluent-kafka does when the handler raises while it reads settings.
                raise TypeError("expected configuration property name") from None
    assert stopped.value.signum == signal.SIGINT
    assert isinstance(stopped.value.__cause__, TypeError)


def test_an_error_without_a_signal_is_left_alone():
    with pytest.raises(ValueError):
        with stop_on_signals():
            raise ValueError("not a stop")
