"""Routes of the ProductImportData import: the synchronous import, vocabularies, taxonomy nodes."""

from __future__ import annotations

from common.api import PREFIX, router
from common.auth import authenticate
from common.http import Request, Response, query_bool
from common.services import product_import

BODY_LIMIT = 32 * 1024 * 1024


@router.route("POST", f"{PREFIX}/product-import")
def import_products(request: Request) -> Response:
    principal = authenticate(request)
    missing = request.query("shouldIncludeMissingVocabularyAttributes")
    return Response(
        product_import.import_products(
            principal,
            request.json(max_bytes=BODY_LIMIT),
            verbose=query_bool(request, "verbose"),
            what_if=query_bool(request, "whatIf"),
            include_missing=None if missing in (None, "") else query_bool(request, "shouldIncludeMissingVocabularyAttributes"),
            vocabulary_id=request.query("vocabularyId"),
        )
    )


@router.route("POST", f"{PREFIX}/vocabularies")
def create_vocabulary(request: Request) -> Response:
    principal = authenticate(request)
    return Response(product_import.save_vocabulary(principal, request.json(max_bytes=4 * 1024 * 1024)), status=201)


@router.route("GET", f"{PREFIX}/vocabularies")
def list_vocabularies(request: Request) -> Response:
    principal = authenticate(request)
    return Response(product_import.list_vocabularies(principal.scope))


@router.route("GET", f"{PREFIX}/vocabularies/{{vocabulary_id}}")
def get_vocabulary(request: Request) -> Response:
    principal = authenticate(request)
    return Response(product_import.get_vocabulary(principal.scope, request.params["vocabulary_id"]))


@router.route("PUT", f"{PREFIX}/vocabularies/{{vocabulary_id}}")
def put_vocabulary(request: Request) -> Response:
    principal = authenticate(request)
    vocabulary_id = request.params["vocabulary_id"]
    product_import.get_vocabulary(principal.scope, vocabulary_id)
    return Response(product_import.save_vocabulary(principal, request.json(max_bytes=4 * 1024 * 1024), vocabulary_id))


@router.route("POST", f"{PREFIX}/taxonomy-nodes")
def create_taxonomy_node(request: Request) -> Response:
    principal = authenticate(request)
    return Response(product_import.create_taxonomy_node(principal, request.json(max_bytes=64 * 1024)), status=201)


@router.route("GET", f"{PREFIX}/taxonomy-nodes")
def list_taxonomy_nodes(request: Request) -> Response:
    principal = authenticate(request)
    return Response(product_import.list_taxonomy_nodes(principal.scope))
