"""Current-time questions answered through the `current_time` tool (gen_time): cities,
IANA time zones, UTC and local time, with a random timestamp as the tool result."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from data_question import Q, _pick

CITIES = {
    "Paris": "Europe/Paris", "London": "Europe/London", "Berlin": "Europe/Berlin",
    "Madrid": "Europe/Madrid", "Rome": "Europe/Rome", "Amsterdam": "Europe/Amsterdam",
    "Vienna": "Europe/Vienna", "Lisbon": "Europe/Lisbon", "Moscow": "Europe/Moscow",
    "Istanbul": "Europe/Istanbul", "Tokyo": "Asia/Tokyo", "Seoul": "Asia/Seoul",
    "Beijing": "Asia/Shanghai", "Singapore": "Asia/Singapore", "Mumbai": "Asia/Kolkata",
    "Dubai": "Asia/Dubai", "Sydney": "Australia/Sydney", "New York": "America/New_York",
    "Chicago": "America/Chicago", "Los Angeles": "America/Los_Angeles", "Toronto": "America/Toronto",
    "Mexico City": "America/Mexico_City", "Sao Paulo": "America/Sao_Paulo", "Cairo": "Africa/Cairo",
}
CITY_PHRASINGS = [
    "What time is it in {place}?", "What's the time in {place}?", "Current time in {place}?",
    "What is the current time in {place}?", "Tell me the time in {place}.",
    "What's the date and time in {place} right now?", "Do you know what time it is in {place}?",
]
ZONE_PHRASINGS = [
    "What time is it in the {zone} time zone?", "Current time in {zone}?",
    "What is the time in timezone {zone}?", "Give me the current time for {zone}.",
]
LOCAL_PHRASINGS = [
    "What time is it?", "What's the time?", "What is the current time?", "What's the date today?",
    "What day is it today?", "Tell me the current date and time.", "Do you know what time it is?",
    "What is today's date?",
]
UTC_PHRASINGS = ["What time is it in UTC?", "Current UTC time?", "What's the time in UTC right now?",
                 "Tell me the UTC time."]
TIME_ANSWERS_PLACE = ["It is {t} in {place}.", "The current time in {place} is {t}.",
                      "In {place} it is now {t}."]
TIME_ANSWERS = ["It is {t}.", "The current date and time is {t}.", "Right now it is {t}."]

_T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
_T_SPAN = int(timedelta(days=3 * 365).total_seconds())


def _random_time(rng: random.Random, zone: str | None) -> str:
    t = _T0 + timedelta(seconds=rng.randrange(_T_SPAN))
    if zone and zone != "UTC":
        t = t.astimezone(ZoneInfo(zone))
    return t.isoformat(timespec="seconds")


def gen_time(rng: random.Random) -> Q:
    r = rng.random()
    if r < 0.45:
        place = rng.choice(list(CITIES))
        zone = CITIES[place]
        i, ph = _pick(rng, CITY_PHRASINGS)
        user, n, intent, slots = ph.format(place=place), len(CITY_PHRASINGS), "city", (place,)
        args = {"timezone": zone}
        ans_t = rng.choice(TIME_ANSWERS_PLACE)
    elif r < 0.6:
        zone = rng.choice(list(CITIES.values()))
        place = zone
        i, ph = _pick(rng, ZONE_PHRASINGS)
        user, n, intent, slots = ph.format(zone=zone), len(ZONE_PHRASINGS), "zone", (zone,)
        args = {"timezone": zone}
        ans_t = rng.choice(TIME_ANSWERS_PLACE)
    elif r < 0.7:
        zone, place = "UTC", "UTC"
        i, ph = _pick(rng, UTC_PHRASINGS)
        user, n, intent, slots = ph, len(UTC_PHRASINGS), "utc", ()
        args = {"timezone": "UTC"}
        ans_t = rng.choice(TIME_ANSWERS_PLACE)
    else:
        zone, place = None, None
        i, ph = _pick(rng, LOCAL_PHRASINGS)
        user, n, intent, slots = ph, len(LOCAL_PHRASINGS), "local", ()
        args = {}
        ans_t = rng.choice(TIME_ANSWERS)
    t = _random_time(rng, zone)
    return Q("time", intent, i, n, slots, user, tool="current_time", args=args, result=t,
             answer=ans_t.format(t=t, place=place))
