"""The fake Piggy's resource routes: contacts, in Piggy's ``{"data": …, "meta": …}`` envelope."""

from __future__ import annotations

import math
import threading
import uuid
from typing import Any

from werkzeug import Request, Response
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule

from .faults import json_response, piggy_error

#: Where the resource routes live.
API_PREFIX = "/api/v3/oauth/clients"
DEFAULT_LIMIT = 30
MAX_LIMIT = 100

Contact = dict[str, Any]


class Contacts:
    """An in-memory contact book and its routes (thread-safe).

    - ``GET contacts?page=&limit=``: a page of contacts, oldest first.
    - ``GET contacts/find-one-by?email=``: the contact with that email.
    - ``GET contacts/{uuid}``: one contact.
    - ``POST contacts``: a JSON object (or form) body becomes a new contact (201).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._contacts: dict[str, Contact] = {}
        self._routes = Map(
            [
                Rule(f"{API_PREFIX}/contacts", endpoint=self._list, methods=["GET"]),
                Rule(f"{API_PREFIX}/contacts", endpoint=self._create, methods=["POST"]),
                Rule(f"{API_PREFIX}/contacts/find-one-by", endpoint=self._find, methods=["GET"]),
                Rule(f"{API_PREFIX}/contacts/<uuid>", endpoint=self._get, methods=["GET"]),
            ],
            strict_slashes=False,
        ).bind("piggy.test")

    def add(self, email: str, **fields: Any) -> Contact:
        """Store a contact with ``email`` and ``fields``; returns it with its new ``uuid``."""
        return self._store({"email": email, **fields})

    def clear(self) -> None:
        """Forget every contact."""
        with self._lock:
            self._contacts.clear()

    def handle(self, request: Request) -> Response:
        """Answer an authenticated request to a resource route.

        :param request: the werkzeug request, its token already checked.
        :returns: the route's answer, or Piggy's error format for an unknown
            route or method.
        """
        try:
            endpoint, args = self._routes.match(request.path, method=request.method)
        except HTTPException as exc:
            return piggy_error(exc.code or 500, exc.name)
        response: Response = endpoint(request, **args)
        return response

    def _store(self, fields: Contact) -> Contact:
        contact = {**fields, "uuid": str(uuid.uuid4())}
        with self._lock:
            self._contacts[contact["uuid"]] = contact
        return contact

    def _list(self, request: Request) -> Response:
        page = request.args.get("page", 1, type=int)
        limit = request.args.get("limit", DEFAULT_LIMIT, type=int)
        if page < 1 or not 1 <= limit <= MAX_LIMIT:
            return piggy_error(422, f"page must be >= 1 and limit between 1 and {MAX_LIMIT}")
        with self._lock:
            contacts = list(self._contacts.values())
        meta = {
            "page": page,
            "limit": limit,
            "total": len(contacts),
            "last_page": max(1, math.ceil(len(contacts) / limit)),
        }
        return json_response({"data": contacts[(page - 1) * limit : page * limit], "meta": meta})

    def _find(self, request: Request) -> Response:
        email = request.args.get("email")
        if not email:
            return piggy_error(422, "The email field is required.")
        with self._lock:
            found = [c for c in self._contacts.values() if c.get("email") == email]
        return _one(found[0] if found else None)

    def _get(self, request: Request, uuid: str) -> Response:
        with self._lock:
            return _one(self._contacts.get(uuid))

    def _create(self, request: Request) -> Response:
        fields = request.form.to_dict() or request.get_json(force=True, silent=True)
        if not isinstance(fields, dict):
            return piggy_error(422, "The request body must be a JSON object or a form.")
        return json_response({"data": self._store(fields), "meta": {}}, 201)


def _one(contact: Contact | None) -> Response:
    if contact is None:
        return piggy_error(404, "Contact not found.")
    return json_response({"data": contact, "meta": {}})
