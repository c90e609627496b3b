"""mmstream's benchmark harness: ``python -m bench [--quick]`` (``make bench`` / ``make bench-quick``).

Every figure is measured in the same run as the baselines it is compared with (raw TCP, bare
WebSocket servers, in-process storage, Redis), because shared machines drift between runs.
Servers run in their own processes; the load generator is another process, pinned to another
core, sending pre-built, pre-masked frames so that it is never the bottleneck.
"""
