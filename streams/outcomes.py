"""Outcome names of decision records and reasons of dead letters, in one place.

A decision record's `outcome` says what became of one trigger for one automation; a
dead letter's `reason` says why a record could not be read at all. Both are part of
the topics' contract with their readers: never rename one.
"""

from __future__ import annotations

# Decided against the number's state, by the cooldown agent.
PASSED = "passed"
SUPPRESSED_COOLDOWN = "suppressed_cooldown"
OUTSIDE_WINDOW = "outside_window"
AUTOMATION_DISABLED = "automation_disabled"
# The number opted out (sms.optouts) and the automation is not transactional; a held
# message of the number ends so too when the opt-out reaches it.
OPTED_OUT = "opted_out"
# Held: the message waits in the number's state until `release_at_ms`.
HELD_WINDOW = "held_window"
DEFERRED_COOLDOWN = "deferred_cooldown"
# What became of a held message: sent at its release, past its deadline, beaten by
# another held message of the number due at the same release, or cancelled.
RELEASED = "released"
EXPIRED = "expired"
COLLAPSED = "collapsed"
CANCELLED = "cancelled"
HOLD_OUTCOMES: tuple[str, ...] = (HELD_WINDOW, DEFERRED_COOLDOWN)
RULE_OUTCOMES: tuple[str, ...] = (PASSED, SUPPRESSED_COOLDOWN, OUTSIDE_WINDOW,
                                  AUTOMATION_DISABLED, OPTED_OUT, *HOLD_OUTCOMES, RELEASED,
                                  EXPIRED, COLLAPSED, CANCELLED)

# Decided at ingest, before any state is read.
INVALID_NUMBER = "invalid_number"
UNKNOWN_AUTOMATION = "unknown_automation"
NO_MATCHING_AUTOMATION = "no_matching_automation"
MISSING_ATTRIBUTE = "missing_attribute"
MESSAGE_TOO_LONG = "message_too_long"
FUTURE_TRIGGER = "future_trigger"
STALE_TRIGGER = "stale_trigger"
INGEST_OUTCOMES: tuple[str, ...] = (INVALID_NUMBER, UNKNOWN_AUTOMATION,
                                    NO_MATCHING_AUTOMATION, MISSING_ATTRIBUTE,
                                    MESSAGE_TOO_LONG, FUTURE_TRIGGER, STALE_TRIGGER)

OUTCOMES: tuple[str, ...] = RULE_OUTCOMES + INGEST_OUTCOMES

# Dead-letter reasons. The codecs' own (`undecodable`, `invalid_record`, `tombstone`,
# `unencodable`) come with their CodecError; `invalid_number` is shared with outcomes.
UNDECODABLE = "undecodable"
INVALID_RECORD = "invalid_record"
TOMBSTONE = "tombstone"
UNENCODABLE = "unencodable"
FUTURE_SEND = "future_send"
GATEWAY_REJECTED = "gateway_rejected"
GATEWAY_GAVE_UP = "gateway_gave_up"

# What became of a send request at the gateway (sms.delivery `outcome`, written by the
# connector): accepted, refused for good (a bad number, a bad sender), or given up
# after no answer or only temporary errors until the attempts ran out.
DELIVERY_ACCEPTED = "accepted"
DELIVERY_FAILED = "failed"
DELIVERY_GIVEN_UP = "given_up"

# How a number came to opt out (sms.optouts `channel`); other systems name their own.
OPT_OUT_BY_CLI = "cli"
OPT_OUT_BY_SMS_REPLY = "sms_reply"
OPT_OUT_BY_FAILED_DELIVERIES = "auto_failed_deliveries"
