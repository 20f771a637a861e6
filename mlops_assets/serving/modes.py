"""The serving mode of the prediction service: who answers and who scores off the path.

Read once when the service starts, from the environment with the Bento's recorded trial as
the default. Plain Python (no BentoML), so the refusals are unit-tested.

- ``off``: the champion answers every request.
- ``shadow``: the champion answers; the challenger scores the same request off the response
  path and is never returned.
- ``canary``: a sticky share of flights (``routing.routes_to_challenger``) is answered by the
  challenger, the rest by the champion.
- ``ab``: routed as in ``canary`` (default share 0.5), and the model that did not answer
  scores the request off the response path, so every request is a paired comparison.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from mlops_assets.lib.routing import flight_key, routes_to_challenger

MODE_VARIABLE = "MLOPS_SERVING_MODE"
SHARE_VARIABLE = "MLOPS_CANARY_SHARE"
MODES = ("off", "shadow", "canary", "ab")
CHAMPION, CHALLENGER = "champion", "challenger"
# A canary starts small when nothing says otherwise; A/B compares on an even split.
DEFAULT_CANARY_SHARE = 0.1
DEFAULT_AB_SHARE = 0.5


@dataclass(frozen=True)
class ServingMode:
    """How the service answers.

    Attributes:
        mode: ``off``, ``shadow``, ``canary`` or ``ab``.
        share: Share of flights the challenger answers (0 unless ``canary`` or ``ab``).
    """

    mode: str
    share: float = 0.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(
                f"{MODE_VARIABLE} must be one of {', '.join(MODES)}, got {self.mode!r}"
            )
        _check_share(self.share, "share")

    @property
    def uses_challenger(self) -> bool:
        """Whether the challenger scores anything at all."""
        return self.mode != "off"

    def answering_role(self, request: Mapping[str, object]) -> str:
        """``champion`` or ``challenger``: the model whose answer is returned."""
        if self.mode in ("canary", "ab") and routes_to_challenger(flight_key(request), self.share):
            return CHALLENGER
        return CHAMPION

    def shadow_role(self, answering: str) -> str | None:
        """The model that scores the request off the response path, if any."""
        if self.mode == "shadow":
            return CHALLENGER
        if self.mode == "ab":
            return CHAMPION if answering == CHALLENGER else CHALLENGER
        return None


def _check_share(share: float, name: str) -> None:
    if not 0.0 <= share <= 1.0:  # NaN fails this too
        raise ValueError(f"{name} must be a number in [0, 1], got {share!r}")


def serving_mode_from_environment(
    env: Mapping[str, str],
    bento_default_mode: str | None,
    bento_default_share: float | None,
    has_challenger: bool,
) -> ServingMode:
    """The serving mode: ``MLOPS_SERVING_MODE`` / ``MLOPS_CANARY_SHARE``, else the Bento's.

    Args:
        env: The environment (``os.environ``).
        bento_default_mode: The trial mode recorded in the Bento, if any.
        bento_default_share: The challenger's share recorded in the Bento, if any.
        has_challenger: Whether the Bento holds a challenger.

    Raises:
        ValueError: an unknown mode or a share outside [0, 1] (the message names the setting).
        RuntimeError: a mode other than ``off`` without a challenger in the Bento.
    """
    raw_mode = env.get(MODE_VARIABLE, "").strip().lower()
    if raw_mode:
        mode = raw_mode
    elif has_challenger and bento_default_mode:
        mode = bento_default_mode
    else:
        mode = "off"
    if mode not in MODES:
        raise ValueError(f"{MODE_VARIABLE} must be one of {', '.join(MODES)}, got {mode!r}")

    raw_share = env.get(SHARE_VARIABLE, "").strip()
    share: float
    if raw_share:
        try:
            share = float(raw_share)
        except ValueError:
            share = float("nan")
        if not 0.0 <= share <= 1.0:  # NaN fails this too
            raise ValueError(f"{SHARE_VARIABLE} must be a number in [0, 1], got {raw_share!r}")
    elif bento_default_share is not None and (bento_default_mode == mode or mode == "canary"):
        share = float(bento_default_share)
    else:
        share = DEFAULT_AB_SHARE if mode == "ab" else DEFAULT_CANARY_SHARE

    if mode != "off" and not has_challenger:
        raise RuntimeError(
            f"{MODE_VARIABLE}={mode} needs a challenger, and this Bento holds only the champion: "
            f"build the Bento with a challenger or set {MODE_VARIABLE}=off"
        )
    return ServingMode(mode, share if mode in ("canary", "ab") else 0.0)
