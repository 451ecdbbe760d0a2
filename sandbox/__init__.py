"""nsjail-isolated warm Python interpreters as a Ray actor pool.

    from sandbox import SandboxConfig, WarmJailPool, SandboxPool, SandboxClient

    with WarmJailPool(SandboxConfig()) as pool:          # in-process, no Ray
        results = pool.execute_batch(["print(6*7)"])     # same order as the input

    handle = SandboxPool.for_current_node(SandboxConfig())   # Ray actor, one per node
    result = await SandboxClient(handle).execute("print(6*7)")

Independent of torl_rllib (nothing here imports it). Ray is imported only when used.
"""

from sandbox.actor import SandboxPool
from sandbox.client import SandboxClient
from sandbox.config import SandboxConfig
from sandbox.errors import SandboxStartError
from sandbox.pool import WarmJailPool
from sandbox.result import ExecutionResult

__all__ = [
    "ExecutionResult",
    "SandboxClient",
    "SandboxConfig",
    "SandboxPool",
    "SandboxStartError",
    "WarmJailPool",
]
