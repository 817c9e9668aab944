"""The admin part of the route table (`azuld.http.routes.ROUTES`): the introspection and admin
API under `/api/azuld/v1` and the dashboard that reads it (`/ui`), all for the `admin` role."""

from __future__ import annotations

from quart import Response

from azuld.http import ops, ui
from azuld.http.auth import ADMIN_ONLY
from azuld.http.openapi import Doc, json_body, json_reply, param_ref, query, ref, text_reply
from azuld.http.route import Route
from azuld.http.steps import Services
from azuld.models.admin import ClusterView, JobsInFlight

__all__ = ["ADMIN_ROUTES"]


async def _dashboard(svc: Services) -> Response:
    return await ui.dashboard()


ADMIN_ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        "/api/azuld/v1/plugins",
        ADMIN_ONLY,
        Doc(
            "plugins",
            "Plugin keys on this instance: lanes, lag, in flight, done, failures",
            "introspection",
            {"200": json_reply("The plugin keys.", ref("Plugins"))},
            (503,),
        ),
        quart=ops.plugins,
    ),
    Route(
        "GET",
        "/api/azuld/v1/sources/<source>",
        ADMIN_ONLY,
        Doc(
            "sourceTree",
            "A source's binaries as a tree, with the features plugins found",
            "introspection",
            {"200": json_reply("The tree.", ref("SourceTree"))},
            (400, 503),
            parameters=(param_ref("Source"),),
        ),
        quart=ops.source,
    ),
    Route(
        "GET",
        "/api/azuld/v1/failed",
        ADMIN_ONLY,
        Doc(
            "failedJobs",
            "Dead letters: jobs that ended in an error status, newest first",
            "introspection",
            {"200": json_reply("The failed jobs.", ref("FailedJobs"))},
            (400, 503),
            parameters=(
                query("plugin", {"type": "string"}, "Only this plugin's (by name)."),
                query("limit", {"type": "integer", "default": 200}, "At most this many."),
            ),
        ),
        quart=ops.failed,
    ),
    Route(
        "POST",
        "/api/azuld/v1/reoffer",
        ADMIN_ONLY,
        Doc(
            "reoffer",
            "Put jobs back in front of their plugin key (recorded in `system.reoffer`)",
            "introspection",
            {"200": json_reply("What became of each job id.", ref("Reoffered"))},
            (400, 408, 413, 422, 503),
            body=json_body(ops.ReoffersRequest),
        ),
        quart=ops.reoffer,
    ),
    Route(
        "GET",
        "/api/azuld/v1/reoffers",
        ADMIN_ONLY,
        Doc(
            "reoffers",
            "The audit trail of re-offered jobs, newest first",
            "introspection",
            {"200": json_reply("The re-offers.", ref("Reoffers"))},
            (503,),
        ),
        quart=ops.reoffers,
    ),
    Route(
        "GET",
        "/api/azuld/v1/cluster",
        ADMIN_ONLY,
        Doc(
            "cluster",
            "The instances sharing the event log: each one's partitions, rebalances, hand-overs",
            "introspection",
            {"200": json_reply("The cluster as this instance sees it.", ClusterView)},
            (503,),
            description=(
                "On Kafka, the members of the instances' group as its coordinator describes "
                "them (if Kafka does not answer, `problem` says so and `members` is empty); on "
                "the embedded log, this process alone, owning every partition. `recent` lists "
                "this instance's latest hand-overs (a rebalance took partitions from it; their "
                "leases were noted for the next owner) and take-overs (leases it took on)."
            ),
        ),
        quart=ops.cluster,
    ),
    Route(
        "GET",
        "/api/azuld/v1/jobs",
        ADMIN_ONLY,
        Doc(
            "jobsInFlight",
            "Jobs leased to plugins on this instance, the longest-running first",
            "introspection",
            {"200": json_reply("The jobs in flight.", JobsInFlight)},
            (400, 503),
            parameters=(
                query(
                    "limit",
                    {"type": "integer", "minimum": 0, "default": 200},
                    "At most this many (`total` counts them all).",
                ),
            ),
        ),
        quart=ops.jobs,
    ),
    Route(
        "GET",
        "/ui",
        ADMIN_ONLY,
        Doc(
            "dashboard",
            "The dashboard (one self-contained HTML page)",
            "introspection",
            {"200": text_reply("The page.", "text/html")},
        ),
        quart=_dashboard,
    ),
)
