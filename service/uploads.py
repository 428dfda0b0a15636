"""Reading ``POST /score``'s multipart form within limits, and refusing forms that do not say what to score.

The form is parsed here rather than by FastAPI's ``File(...)`` parameters so the limits hold while the body is
still arriving (``Content-Length`` first, then a byte counter for chunked uploads) and every refusal is one of our
typed errors with a reason a line engineer can act on (FastAPI would answer a wrong field name with a generic
"Field required").
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.types import Message, Receive

from service.errors import BadForm, TooManyFiles, UnsupportedMediaType, UploadTooLarge
from service.imaging import Upload

FILE_FIELDS = ("file", "files")
CATEGORY_FIELD = "category"
_MAX_FIELDS = 8


@dataclass(frozen=True)
class FormUploads:
    uploads: list[Upload]
    category: str | None


class _BodyTooLarge(Exception):
    """Raised from inside the parser's stream; the parser closes the temporary files it opened and re-raises."""


def _limited(receive: Receive, limit: int) -> Receive:
    received = 0

    async def receive_within_limit() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise _BodyTooLarge(f"more than {limit} bytes")
        return message

    return receive_within_limit


def _too_large(limit: int) -> UploadTooLarge:
    return UploadTooLarge(f"the request body is over the upload limit of {limit} bytes; send fewer or smaller files")


async def read_form(request: Request, max_bytes: int, max_files: int, query_category: str | None) -> FormUploads:
    """Parse the multipart body and return the files (upload order) and the category, or raise a typed error."""
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        message = (
            f"POST /score takes multipart/form-data (got {content_type or 'no content type'!r}); "
            "e.g. curl -F file=@part.png http://host:8000/score"
        )
        raise UnsupportedMediaType(message)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(max_bytes)
    limited = Request(request.scope, receive=_limited(request.receive, max_bytes))
    parser = MultiPartParser(
        request.headers, limited.stream(), max_files=max_files + 1, max_fields=_MAX_FIELDS, max_part_size=64 * 1024
    )
    try:
        form = await parser.parse()
    except _BodyTooLarge as exc:
        raise _too_large(max_bytes) from exc
    except MultiPartException as exc:
        if exc.message.startswith("Too many files"):
            raise TooManyFiles(f"more than {max_files} files in one request; split it into several") from exc
        raise BadForm(f"the multipart body cannot be read: {exc.message}") from exc
    try:
        return await _collect(form.multi_items(), max_files, query_category)
    finally:
        await form.close()


async def _collect(
    items: list[tuple[str, UploadFile | str]], max_files: int, query_category: str | None
) -> FormUploads:
    files: list[UploadFile] = []
    categories = [query_category] if query_category else []
    unexpected: list[str] = []
    text_in_file_field: list[str] = []
    for key, value in items:
        if isinstance(value, UploadFile) and key in FILE_FIELDS:
            files.append(value)
        elif isinstance(value, UploadFile):
            unexpected.append(key)
        elif key == CATEGORY_FIELD:
            categories.append(value.strip())
        elif key in FILE_FIELDS:
            text_in_file_field.append(key)
        else:
            unexpected.append(key)
    if text_in_file_field:
        message = (
            f"form field {text_in_file_field[0]!r} holds text, not a file upload "
            f"(with curl write -F {text_in_file_field[0]}=@path, with the @)"
        )
        raise BadForm(message)
    if unexpected:
        message = (
            f"form fields {sorted(set(unexpected))} are not understood: send images as 'file' (one) or "
            f"'files' (repeated), and optionally 'category'"
        )
        raise BadForm(message, fields=sorted(set(unexpected)))
    if not files:
        raise BadForm("no image in the request: send it as form field 'file' (or repeated 'files')")
    if len(files) > max_files:
        raise TooManyFiles(f"{len(files)} files in one request, over the limit of {max_files}; split it into several")
    if len(set(categories)) > 1:
        raise BadForm(f"category given more than once with different values: {categories}")
    uploads = [
        Upload(index=i, filename=upload.filename or f"file[{i}]", data=await upload.read())
        for i, upload in enumerate(files)
    ]
    return FormUploads(uploads=uploads, category=categories[0] if categories and categories[0] else None)
