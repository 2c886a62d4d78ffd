"""Routes of the ProductImportData import: the synchronous import, vocabularies, taxonomy nodes."""

from __future__ import annotations

from common.api import CURSOR, PREFIX, limit_param, page_limit, paged, router
from common.auth import authenticate
from common.http import QueryParam, Request, Response, query_bool
from common.models.syndigo import ImportRequest, ImportResponse, TaxonomyNodeIn, TaxonomyNodePublic, VocabularyIn, VocabularyPublic
from common.services import product_import

IMPORT_QUERY = (
    QueryParam("companyId", "Accepted as the vendor's feeds send it, and not used: the company is the token's X-Org-ID.", {"type": "string"}),
    QueryParam("vocabularyId", "The vocabulary to read attribute names with (the tenant's default when omitted).", {"type": "string"}),
    QueryParam("verbose", "true: each result lists what changed and the issues opened or resolved.", {"type": "boolean", "default": False}),
    QueryParam("whatIf", "true: run everything, commit nothing.", {"type": "boolean", "default": False}),
    QueryParam(
        "shouldIncludeMissingVocabularyAttributes",
        "true: keep attributes the vocabulary lacks under their own name instead of failing the product"
        " (default: the vocabulary's include_missing_attributes).",
        {"type": "boolean"},
    ),
)

BODY_LIMIT = 32 * 1024 * 1024
IMPORT_ID_HEADER = "X-Import-Id"


@router.route(
    "POST",
    f"{PREFIX}/product-import",
    summary="Import products in the ProductImportData format (at most 1,000; larger imports go through a bulk job)",
    request_model=ImportRequest,
    response_model=ImportResponse,
    query=IMPORT_QUERY,
    error_statuses=(413, 422),
    tags=("product import",),
    response_headers=(
        (
            IMPORT_ID_HEADER,
            "This import's id: the `job_id` of the failure issues it opens (`GET /validation?job_id=`) and the audit events it writes.",
        ),
    ),
)
def import_products(request: Request) -> Response:
    principal = authenticate(request)
    missing = request.query("shouldIncludeMissingVocabularyAttributes")
    import_id, answer = product_import.import_products(
        principal,
        request.json(max_bytes=BODY_LIMIT),
        verbose=query_bool(request, "verbose"),
        what_if=query_bool(request, "whatIf"),
        include_missing=None if missing in (None, "") else query_bool(request, "shouldIncludeMissingVocabularyAttributes"),
        vocabulary_id=request.query("vocabularyId"),
    )
    return Response(answer, headers={IMPORT_ID_HEADER: import_id})


@router.route(
    "POST",
    f"{PREFIX}/vocabularies",
    summary="Create a vocabulary (attribute aliases; the first one is the default)",
    request_model=VocabularyIn,
    response_model=VocabularyPublic,
    response_status=201,
    error_statuses=(422,),
    tags=("product import",),
)
def create_vocabulary(request: Request) -> Response:
    principal = authenticate(request)
    return Response(product_import.save_vocabulary(principal, request.json(max_bytes=4 * 1024 * 1024)), status=201)


@router.route(
    "GET", f"{PREFIX}/vocabularies", summary="List vocabularies", response_model=VocabularyPublic, list_response=True, tags=("product import",)
)
def list_vocabularies(request: Request) -> Response:
    principal = authenticate(request)
    return Response(product_import.list_vocabularies(principal.scope))


@router.route(
    "GET", f"{PREFIX}/vocabularies/{{vocabulary_id}}", summary="Get a vocabulary", response_model=VocabularyPublic, tags=("product import",)
)
def get_vocabulary(request: Request) -> Response:
    principal = authenticate(request)
    return Response(product_import.get_vocabulary(principal.scope, request.params["vocabulary_id"]))


@router.route(
    "PUT",
    f"{PREFIX}/vocabularies/{{vocabulary_id}}",
    summary="Replace a vocabulary",
    description="Without `default`, the vocabulary stays the default or not as it was; the default cannot be unset (409), only moved.",
    request_model=VocabularyIn,
    response_model=VocabularyPublic,
    error_statuses=(409, 422),
    tags=("product import",),
)
def put_vocabulary(request: Request) -> Response:
    principal = authenticate(request)
    vocabulary_id = request.params["vocabulary_id"]
    product_import.get_vocabulary(principal.scope, vocabulary_id)
    return Response(product_import.save_vocabulary(principal, request.json(max_bytes=4 * 1024 * 1024), vocabulary_id))


@router.route(
    "POST",
    f"{PREFIX}/taxonomy-nodes",
    summary="Create a taxonomy node",
    request_model=TaxonomyNodeIn,
    response_model=TaxonomyNodePublic,
    response_status=201,
    error_statuses=(422,),
    tags=("product import",),
)
def create_taxonomy_node(request: Request) -> Response:
    principal = authenticate(request)
    return Response(product_import.create_taxonomy_node(principal, request.json(max_bytes=64 * 1024)), status=201)


@router.route(
    "GET",
    f"{PREFIX}/taxonomy-nodes",
    summary="List taxonomy nodes",
    description="Oldest first, so a node comes after its parent.",
    response_model=TaxonomyNodePublic,
    list_response=True,
    query=(limit_param(), CURSOR),
    tags=("product import",),
)
def list_taxonomy_nodes(request: Request) -> Response:
    principal = authenticate(request)
    items, next_cursor = product_import.list_taxonomy_nodes(principal.scope, limit=page_limit(request), cursor=request.query("cursor"))
    return paged(request, items, next_cursor)
