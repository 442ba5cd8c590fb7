"""Sign webhook bodies with the official libraries; print the headers as JSON.

    webhook_sign.py JOBS

JOBS is a JSON list; each job is one of
    {"scheme": "stripe", "secret": ..., "timestamp": ..., "body": ...}
        signed with stripe.WebhookSignature.generate_signature_header
    {"scheme": "standard", "secret": ..., "id": ..., "timestamp": ..., "body": ...}
        signed with standardwebhooks.Webhook.sign
The output is a JSON list with one {header: value} object per job, in order.
Stripe headers are also checked with the library's own verify_header, so
every header printed is one the vendor's library accepts.
"""
import json
import sys
from datetime import datetime, timezone


def stripe_headers(job):
    import stripe

    body, secret = job["body"], job["secret"]
    header = stripe.WebhookSignature.generate_signature_header(body, secret, timestamp=job["timestamp"])
    stripe.WebhookSignature.verify_header(body, header, secret, tolerance=None)
    return {"Stripe-Signature": header}


def standard_headers(job):
    from standardwebhooks import Webhook

    at = datetime.fromtimestamp(job["timestamp"], tz=timezone.utc)
    signature = Webhook(job["secret"]).sign(job["id"], at, job["body"])
    return {"webhook-id": job["id"], "webhook-timestamp": str(job["timestamp"]), "webhook-signature": signature}


def main(argv):
    out = []
    for job in json.loads(argv[0]):
        if job["scheme"] == "stripe":
            out.append(stripe_headers(job))
        elif job["scheme"] == "standard":
            out.append(standard_headers(job))
        else:
            raise SystemExit(f"unknown scheme {job['scheme']!r}")
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
