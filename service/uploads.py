"""Reading ``POST /score``'s multipart form within limits, and refusing forms that do not say what to score.

The form is parsed here rather than by FastAPI's ``File(...)`` parameters so the limits hold while the body is
still arriving (``Content-Length`` first, then a byte counter for chunked uploads) and every refusal is one of our
typed errors with a reason a line engineer can act on (FastAPI would answer a wrong field name with a generic
"Field required").
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request
from starlette.types import Message, Receive

from service.errors import (
    BadForm,
    ClientDisconnected,
    RequestTimeout,
    TooManyFiles,
    UnsupportedMediaType,
    UploadTooLarge,
)
from service.imaging import Upload
from service.text import shown

FILE_FIELDS = ("file", "files")
CATEGORY_FIELD = "category"
_MAX_FIELDS = 8
_MAX_TEXT_PART = 64 * 1024


@dataclass(frozen=True)
class FormUploads:
    uploads: list[Upload]
    category: str | None


class _BodyTooLarge(Exception):
    """Raised from inside the parser's stream; the parser closes the temporary files it opened and re-raises."""


class _BodyTooSlow(Exception):
    """The body's deadline passed while waiting for more of it."""


def _limited(receive: Receive, limit: int, timeout_s: float | None = None) -> Receive:
    """``receive`` that counts body bytes against ``limit`` and gives the whole body ``timeout_s`` to arrive."""
    received = 0
    loop = asyncio.get_running_loop()
    deadline = None if timeout_s is None else loop.time() + timeout_s

    async def receive_within_limit() -> Message:
        nonlocal received
        if deadline is None:
            message = await receive()
        else:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError as exc:
                raise _BodyTooSlow from exc
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise _BodyTooLarge(f"more than {limit} bytes")
        return message

    return receive_within_limit


def _too_large(limit: int) -> UploadTooLarge:
    return UploadTooLarge(f"the request body is over the upload limit of {limit} bytes; send fewer or smaller files")


async def read_form(
    request: Request,
    max_bytes: int,
    max_files: int,
    query_category: str | None,
    timeout_s: float | None = None,
) -> FormUploads:
    """Parse the multipart body and return the files (upload order) and the category, or raise a typed error
    (a client that leaves mid-upload is ``ClientDisconnected``, one slower than ``timeout_s`` ``RequestTimeout``)."""
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        got = shown(content_type) if content_type else "no content type"
        message = (
            f"POST /score takes multipart/form-data (got {got}); e.g. curl -F file=@part.png http://host:8000/score"
        )
        raise UnsupportedMediaType(message)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(max_bytes)
    limited = Request(request.scope, receive=_limited(request.receive, max_bytes, timeout_s))
    parser = MultiPartParser(
        request.headers,
        limited.stream(),
        max_files=max_files + 1,
        max_fields=_MAX_FIELDS,
        max_part_size=_MAX_TEXT_PART,
    )
    try:
        form = await parser.parse()
    except _BodyTooLarge as exc:
        raise _too_large(max_bytes) from exc
    except _BodyTooSlow as exc:
        message = f"the request body did not arrive within {timeout_s:g} s; send it at once (or smaller)"
        raise RequestTimeout(message) from exc
    except ClientDisconnect as exc:
        raise ClientDisconnected("the client closed the connection before its upload was complete") from exc
    except MultiPartException as exc:
        part = getattr(parser, "_current_part", None)  # the part being read when the parser gave up
        raise _form_error(exc.message, max_files, getattr(part, "field_name", "") or "?") from exc
    try:
        return await _collect(form.multi_items(), max_files, query_category)
    finally:
        await form.close()


def _form_error(reason: str, max_files: int, field: str) -> Exception:
    if reason.startswith("Too many files"):
        return TooManyFiles(f"more than {max_files} files in one request; split it into several")
    if reason.startswith("Part exceeded maximum size"):
        message = (
            f"form field {shown(field)} is text over {_MAX_TEXT_PART // 1024} KB: send images as file uploads, with a "
            f"filename, in field 'file' or 'files' (curl -F file=@part.png, with the @); 'category' is a short name"
        )
        return BadForm(message, fields=[field])
    return BadForm(f"the multipart body cannot be read: {reason}")


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
            f"form fields {', '.join(shown(name) for name in sorted(set(unexpected)))} are not understood: "
            "send images as 'file' (one) or 'files' (repeated), and optionally 'category'"
        )
        raise BadForm(message, fields=sorted(set(unexpected)))
    if not files:
        raise BadForm("no image in the request: send it as form field 'file' (or repeated 'files')")
    if len(files) > max_files:
        raise TooManyFiles(f"{len(files)} files in one request, over the limit of {max_files}; split it into several")
    if len(set(categories)) > 1:
        raise BadForm(f"category given more than once with different values: {', '.join(shown(c) for c in categories)}")
    uploads = [
        Upload(index=i, filename=upload.filename or f"file[{i}]", data=await upload.read())
        for i, upload in enumerate(files)
    ]
    return FormUploads(uploads=uploads, category=categories[0] if categories and categories[0] else None)
