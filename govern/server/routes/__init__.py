"""The API's routes, one router per resource, in the order the application tries them (and its OpenAPI document
lists them): each route authenticates and checks its operation through `server.deps.authorised`, calls the CLI's
use case with the principal as actor, and answers with the CLI's `--json` (`presentation.jsonable`)."""

from fastapi import APIRouter


def routers() -> list[APIRouter]:
    from govern.server.routes import (
        access,
        apps,
        audit,
        ci,
        deployments,
        operators,
        predict,
        promotions,
        status,
        trainings,
        versions,
    )

    return [
        operators.router,
        status.router,
        apps.router,
        predict.router,
        audit.router,
        versions.router,
        ci.router,
        promotions.router,
        trainings.router,
        deployments.router,
        access.router,
    ]
