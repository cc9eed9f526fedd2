"""Chat / small-talk questions for the data generator: greetings, thanks, who-are-you,
and short facts, all answered directly without a tool (gen_chat)."""

from __future__ import annotations

import random

from data_question import Q, _pick

CHAT = {
    "greeting": (
        ["Hi", "Hello", "Hey", "Hello there!", "Hi!", "Good morning", "Good evening", "Hey there",
         "Hi there!", "Greetings", "Good afternoon", "Howdy"],
        ["Hello! How can I help you today?", "Hi! What can I do for you?",
         "Hello! What can I help you with?"],
    ),
    "how_are_you": (
        ["How are you?", "How are you doing?", "How's it going?", "Hi, how are you?",
         "How are things?"],
        ["I'm doing well, thanks! How can I help?", "I'm fine, thank you. What can I do for you?"],
    ),
    "who": (
        ["Who are you?", "What are you?", "What is your name?", "What's your name?",
         "Introduce yourself.", "Tell me about yourself."],
        ["I am sluice-tiny, a small demo assistant. I can do arithmetic, query the sales database and tell the time.",
         "I'm sluice-tiny, a small demo model. I can calculate, look things up in the sales database and tell the time."],
    ),
    "capabilities": (
        ["What can you do?", "How can you help me?", "What are you able to do?",
         "What tools do you have?", "What can I ask you?"],
        ["I can do arithmetic, answer questions about the sales database and tell you the current time.",
         "I can calculate, query the sales database and tell the time. Just ask!"],
    ),
    "thanks": (
        ["Thanks", "Thank you!", "Thanks a lot!", "Great, thanks!", "Thank you very much.",
         "Cheers", "Many thanks!"],
        ["You're welcome!", "Happy to help!", "You're welcome. Anything else?"],
    ),
    "bye": (
        ["Bye", "Goodbye!", "See you later!", "That's all, bye.", "Bye for now", "Good night!"],
        ["Goodbye!", "Bye! Have a nice day.", "See you!"],
    ),
    "ack": (
        ["OK", "Okay.", "Cool", "Nice!", "Great", "Alright."],
        ["Glad to help. Anything else?", "Okay! Let me know if you need anything else."],
    ),
}

# (question, answer); yes/no and short facts that need no tool.
FACTS = [
    ("Is the sky blue?", "Yes."),
    ("Is water wet?", "Yes."),
    ("Is the sun cold?", "No, the sun is very hot."),
    ("Is ice hot?", "No, ice is cold."),
    ("Can fish fly?", "No, most fish cannot fly."),
    ("Do birds have wings?", "Yes, birds have wings."),
    ("Is snow white?", "Yes, snow is white."),
    ("Is the moon made of cheese?", "No."),
    ("Is Paris in France?", "Yes, Paris is the capital of France."),
    ("Is Tokyo in Japan?", "Yes, Tokyo is the capital of Japan."),
    ("Is Berlin in Spain?", "No, Berlin is in Germany."),
    ("Are cats animals?", "Yes."),
    ("Is a week seven days long?", "Yes, a week has seven days."),
    ("Does a triangle have four sides?", "No, a triangle has three sides."),
    ("Can you help me?", "Yes, of course. What do you need?"),
    ("Are you a human?", "No, I am sluice-tiny, a small demo assistant."),
    ("Are you a robot?", "I am a small language model, sluice-tiny."),
    ("What color is the sky?", "The sky is blue."),
    ("How many days are in a week?", "There are seven days in a week."),
    ("How many legs does a dog have?", "A dog has four legs."),
    ("What color is grass?", "Grass is green."),
    ("Which is bigger, the sun or the moon?", "The sun is much bigger than the moon."),
    ("What is the capital of France?", "The capital of France is Paris."),
    ("What is the capital of Japan?", "The capital of Japan is Tokyo."),
    ("What do bees make?", "Bees make honey."),
    ("Is it day at noon?", "Yes."),
]


def gen_chat(rng: random.Random) -> Q:
    if rng.random() < 0.35:
        i = rng.randrange(len(FACTS))
        q, a = FACTS[i]
        # Facts: a question is held out as a whole (every 6th).
        return Q("chat", "fact", 0 if i % 6 else 3, 4, (), q, reply=a)
    intent = rng.choice(list(CHAT))
    phrasings, replies = CHAT[intent]
    i, text = _pick(rng, phrasings)
    return Q("chat", intent, i, len(phrasings), (), text, reply=rng.choice(replies))
