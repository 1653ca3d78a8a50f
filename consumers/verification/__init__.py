"""The verification consumer: after each step that changed the target, and at each
analysis step, health checks and metric checks of the new version, ending in
``verification.passed``, ``verification.failed`` (Failed or Error) or
``verification.inconclusive`` with every measurement recorded.

It needs ``Ports.targets`` (``targets(type, settings) -> Target``) and nothing else.
"""

from consumers.contract import Consumer
from consumers.deployment.state import DeploymentState, evolve
from consumers.verification.core import NAME, SOURCE, decide, stream_for
from consumers.verification.facts import Facts
from consumers.verification.gather import gather
from consumers.verification.policy import AnalysisPolicy
from events.execution import StepApplied, StepStarted
from events.topics import EXECUTIONS

VERIFICATION: Consumer[DeploymentState] = Consumer(
    name=NAME,
    topics=(EXECUTIONS.name,),
    stream_for=stream_for,
    initial=DeploymentState,
    evolve=evolve,
    decide=decide,
    accepts=(StepApplied.TYPE, StepStarted.TYPE),
    gather=gather,
    description="health and metric checks after each step; verification passed | failed | inconclusive",
)

__all__ = ["NAME", "SOURCE", "VERIFICATION", "AnalysisPolicy", "Facts", "decide", "gather", "stream_for"]
