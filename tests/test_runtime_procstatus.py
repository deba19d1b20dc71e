"""runtime.procstatus: the one /proc/self/status reader (VmRSS, VmHWM in MiB) of the benchmarks."""
import math
import sys

import pytest

from lunarseg.runtime.procstatus import status_mb

FAKE = """Name:\tpython
VmPeak:\t  812340 kB
VmHWM:\t  102400 kB
VmRSS:\t   51712 kB
Threads:\t4
"""


def test_a_known_field_of_a_status_text_is_read_in_mib_and_a_missing_one_is_nan():
    assert status_mb("VmHWM", FAKE) == 100.0 and status_mb("VmRSS", FAKE) == 50.5
    assert math.isnan(status_mb("VmSwap", FAKE))
    assert math.isnan(status_mb("VmRS", FAKE))  # a prefix of a field is not that field


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/status is Linux only")
def test_live_peak_is_at_least_the_resident_set_and_both_are_positive():
    rss, hwm = status_mb("VmRSS"), status_mb("VmHWM")
    assert 0 < rss <= hwm
