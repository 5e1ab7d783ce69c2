"""Payments that prove themselves: provider callback signatures, the ``[payments]`` config, the cap
of a driver's own order, and the migration that makes a transaction id pay one order only."""

from __future__ import annotations

import hashlib
import hmac
import tomllib
from fractions import Fraction

import pytest

from central.adapters.database import SqliteDatabase
from central.adapters.schema import core, payment_proof
from central.application.payments import CallbackRejected, PaymentSettings, signature, verify_callback
from central.config import parse_config
from central.domain.orders import PaymentMethod
from central.domain.params import StationParams
from central.domain.pricing import energy_cap_wh
from central.domain.tariff import Tariff
from pilegate.settings import ConfigError

NOW = 1_750_000_000
SETTINGS = PaymentSettings(secrets={PaymentMethod.WECHAT: b"s" * 16}, tolerance_s=300, clock=lambda: NOW)
BODY = b'{"orderId":"o1","transactionId":"t1","amountCents":100}'


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body():
    expected = hmac.new(b"k", b"123." + BODY, hashlib.sha256).hexdigest()
    assert signature(b"k", "123", BODY) == expected


def test_a_fresh_correctly_signed_callback_names_its_method():
    stamp = str(NOW - 299)
    sent = signature(b"s" * 16, stamp, BODY).upper()  # hex case does not matter
    assert verify_callback(SETTINGS, "wechat", stamp, sent, BODY) is PaymentMethod.WECHAT


@pytest.mark.parametrize(
    ("provider", "stamp", "secret", "body"),
    [
        ("alipay", str(NOW), b"s" * 16, BODY),  # no secret configured for it
        ("paypal", str(NOW), b"s" * 16, BODY),  # not a provider
        ("wechat", str(NOW - 301), b"s" * 16, BODY),  # stale
        ("wechat", str(NOW + 301), b"s" * 16, BODY),  # from the future
        ("wechat", "-5", b"s" * 16, BODY),
        ("wechat", "1e9", b"s" * 16, BODY),
        ("wechat", str(NOW), b"t" * 16, BODY),  # wrong secret
        ("wechat", str(NOW), b"s" * 16, BODY + b" "),  # body changed after signing
    ],
)
def test_a_callback_that_does_not_prove_itself_is_rejected(provider, stamp, secret, body):
    sent = signature(secret, stamp if stamp.isdigit() else "0", BODY)
    with pytest.raises(CallbackRejected):
        verify_callback(SETTINGS, provider, stamp, sent, body)


def test_without_secrets_every_callback_is_rejected():
    stamp = str(NOW)
    with pytest.raises(CallbackRejected):
        verify_callback(
            PaymentSettings(clock=lambda: NOW), "wechat", stamp, signature(b"", stamp, BODY), BODY
        )


def test_payments_config_reads_secrets_inline_and_from_files(tmp_path):
    (tmp_path / "ali").write_text("alipay-secret-0123456789\n")
    text = '[payments]\ntolerance_s = 60\nwechat_secret = "wechat-secret-0123"\nalipay_secret_file = "ali"\n'
    config = parse_config(tomllib.loads(text), base=tmp_path)
    assert config.payments.tolerance_s == 60
    assert config.payments.secrets == {
        PaymentMethod.WECHAT: b"wechat-secret-0123",
        PaymentMethod.ALIPAY: b"alipay-secret-0123456789",
    }
    assert parse_config({}).payments.secrets == {}


def test_payments_config_problems_are_named(tmp_path):
    text = '[payments]\ntolerance_s = 0\nwechat_secret = "short"\nalipay_secret_file = "nope"\nfoo = 1\n'
    with pytest.raises(ConfigError) as info:
        parse_config(tomllib.loads(text), base=tmp_path)
    found = info.value.problems
    assert "payments.tolerance_s: 0 is not 1..3600 s" in found
    assert "payments.wechat_secret: must be a string of at least 16 characters" in found
    assert not any("short" in p for p in found)  # a secret is never echoed
    assert any(p.startswith("payments.alipay_secret_file: cannot read") for p in found)
    assert "payments: unknown key 'foo'" in found


def test_the_cap_is_what_the_budget_pays_at_the_dearest_kwh():
    tariff = Tariff.from_params(StationParams())  # peak 1.2 + service 0.8 = 2.00 per kWh at most
    assert energy_cap_wh(Fraction(10), tariff) == 5000
    assert energy_cap_wh(Fraction(1, 100), tariff) == 5  # 0.01 yuan pays 5 Wh
    assert energy_cap_wh(Fraction(1, 1000), tariff) == 0
    assert energy_cap_wh(Fraction(0), tariff) == energy_cap_wh(Fraction(-5), tariff) == 0


def test_the_migration_keeps_the_first_use_of_a_transaction_id_and_then_refuses_another():
    db = SqliteDatabase(memory=True)
    core(db)
    db.execute("INSERT INTO users (id, username, password_hash, register_time) VALUES (1, 'u', 'h', 't')")
    for order_id, txn in (("a", "wx-1"), ("b", "wx-1"), ("c", "wx-1"), ("d", "wx-2"), ("e", None)):
        db.execute(
            "INSERT INTO orders (id, order_no, user_id, status, transaction_id, create_time) "
            "VALUES (?, ?, 1, 2, ?, 't')",
            [order_id, order_id, txn],
        )
    payment_proof(db)
    rows = db.execute("SELECT id, transaction_id FROM orders ORDER BY id").fetchall()
    assert rows == [
        ("a", "wx-1"),
        ("b", "wx-1#reused:b"),
        ("c", "wx-1#reused:c"),
        ("d", "wx-2"),
        ("e", None),
    ]
    with pytest.raises(Exception, match="UNIQUE"):
        db.execute("UPDATE orders SET transaction_id = 'wx-2' WHERE id = 'e'")
    db.execute("UPDATE orders SET payment_confirmed_by = 1 WHERE id = 'a'")
