"""What both FastAPI services share: tenant from the API key, path ids that may reach SQL, and the probe routes."""
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Request, Response, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

# Postgres text cannot hold NUL: a parameter that reaches SQL refuses it with a 422 naming the parameter.
NO_NUL = r"^[^\x00]*$"
BatchIdInSql = Annotated[str, Path(pattern=NO_NUL)]
FileIdInSql = Annotated[str, Path(pattern=NO_NUL)]

_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <API key>")


def tenant_for_request(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> str:
    """The tenant the API key belongs to (keys from settings.api_keys on app.state.settings)."""
    if credentials is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing API key: send 'Authorization: Bearer <key>'",
                            headers={"WWW-Authenticate": "Bearer"})
    tenant = request.app.state.settings.api_keys.get(credentials.credentials)
    if tenant is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "unknown API key", headers={"WWW-Authenticate": "Bearer"})
    return tenant


TenantDep = Annotated[str, Depends(tenant_for_request)]


def probe_router(is_ready: Callable[[FastAPI], bool]) -> APIRouter:
    """/healthz, /readyz and /metrics; is_ready(app) says whether the service can do its work now."""
    router = APIRouter(tags=["operations"])

    @router.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz", responses={503: {"description": "not ready yet"}})
    def readyz(request: Request, response: Response) -> dict[str, bool]:
        ready = is_ready(request.app)
        if not ready:
            response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return {"ready": ready}

    @router.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router
