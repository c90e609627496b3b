"""Scale-out: many mmstream processes behind HAProxy, each owning the streams whose ids hash
to it (design and figures: docs/scaling.md)."""

from ._fanout import ClusterListing as ClusterListing
from ._fanout import Placed as Placed
from ._fanout import list_cluster as list_cluster
from ._fanout import merge_listings as merge_listings
from ._fanout import node_urls as node_urls
from ._haproxy import DEFAULT_BIND as DEFAULT_BIND
from ._haproxy import DEFAULT_NODES as DEFAULT_NODES
from ._haproxy import BalancerOptions as BalancerOptions
from ._haproxy import Endpoint as Endpoint
from ._haproxy import Node as Node
from ._haproxy import format_duration as format_duration
from ._haproxy import max_maxconn as max_maxconn
from ._haproxy import parse_duration as parse_duration
from ._haproxy import parse_endpoint as parse_endpoint
from ._haproxy import parse_nodes as parse_nodes
from ._haproxy import render_haproxy_config as render_haproxy_config
from ._supervisor import Child as Child
from ._supervisor import RestartPolicy as RestartPolicy
from ._supervisor import Supervisor as Supervisor
from ._supervisor import Worker as Worker
from ._supervisor import plan_workers as plan_workers
from ._supervisor import run_supervisor as run_supervisor
from ._supervisor import serve_argv as serve_argv
