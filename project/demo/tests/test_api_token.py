"""The "Your API token" line of the home page: a newcomer copies it into curl; it is made by a POST, never a URL."""

from __future__ import annotations

import pytest
from django.test import Client
from rest_framework.authtoken.models import Token

from tests.factories import make_user

pytestmark = pytest.mark.django_db(transaction=True)


def test_api_token__created_by_a_post_and_shown_to_its_user_only(user, client_for):
    other = make_user("grace")
    other_key = Token.objects.create(user=other).key
    client = client_for(user)

    before = client.get("/").content.decode()
    assert 'action="/api-token/"' in before and "Create my API token" in before
    assert 'id="api-token-key"' not in before and other_key not in before
    assert not Token.objects.filter(user=user).exists()  # looking does not create one

    response = client.post("/api-token/")
    assert response.status_code == 302 and response["Location"] == "/#api-token"  # the key is not in the URL
    key = Token.objects.get(user=user).key

    page = client.get("/")
    assert f'<code id="api-token-key">{key}</code>' in page.content.decode()
    assert other_key not in page.content.decode()
    assert "no-store" in page["Cache-Control"]
    # The API takes it.
    assert client_for(other).get("/").content.decode().count(other_key) >= 1
    assert Client().get("/api/jobs/", HTTP_AUTHORIZATION=f"Token {key}").status_code == 200

    client.post("/api-token/")  # a second press keeps the same token
    assert list(Token.objects.filter(user=user).values_list("key", flat=True)) == [key]


def test_api_token__anonymous_gets_none(client):
    response = client.post("/api-token/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")
    assert not Token.objects.exists()
    assert client.get("/").status_code == 302  # the page that shows a token needs a login


def test_api_token__creating_needs_csrf_and_a_post(user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)

    assert client.post("/api-token/").status_code == 403
    assert client.get("/api-token/").status_code == 405
    assert not Token.objects.exists()
