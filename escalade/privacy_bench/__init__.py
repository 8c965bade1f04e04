"""Privacy benchmark (`escalade bench privacy`): what a wire embedding reveals about its input."""

from escalade.privacy_bench.report import PrivacyReport
from escalade.privacy_bench.run import run_privacy_bench

__all__ = ["PrivacyReport", "run_privacy_bench"]
