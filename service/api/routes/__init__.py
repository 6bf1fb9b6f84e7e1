"""One router per resource; ``ROUTERS`` is what main.create_app includes, in /docs order."""

from service.api.routes import (
    admin,
    decode,
    edit,
    encode,
    generate,
    health,
    interpolate,
    models,
    pages,
    reconstruct,
)

ROUTERS = [
    generate.router,
    decode.router,
    encode.router,
    reconstruct.router,
    interpolate.router,
    edit.router,
    models.router,
    health.router,
    admin.router,
    pages.router,
]
