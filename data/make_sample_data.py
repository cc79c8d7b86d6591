"""Write the small synthetic sample datasets under data/sample (deterministic; run `python data/make_sample_data.py`).

Sentences come from templates filled from small gazetteers with a fixed seed. Every generated sentence carries a
topic (AG News labels), a sentiment and CoNLL-2003 BIO entity tags, so the same sentence can serve several tasks:

    data/sample/topic/{train,validation,test}.jsonl      {"text", "label"} (+ "sentiment" on about half the rows)
    data/sample/sentiment/{train,validation,test}.jsonl  {"text", "label"}
    data/sample/ner/{train,validation,test}.jsonl        {"tokens", "ner_tags"} (+ "text", "topic", "sentiment")
    data/sample/similarity/{train,validation,test}.jsonl {"sentence1", "sentence2", "score"}, score 0-5
    data/sample/mentions/{train,validation,test}.jsonl   {"text", "labels"}: the entity types the sentence mentions
    data/sample/rating/{train,validation,test}.jsonl     {"text", "score"}: a 1-5 rating from its sentiment
    data/sample/local/sentiment_{train,test}.csv         text,label        (for data/tasks/local_files.yaml)
    data/sample/local/ner_{train,test}.conll             "token tag" lines, IOB1 tags, -DOCSTART- lines

Similarity pairs are made from the same templates: the same sentence behind another opener ("According to reports,
...") scores 4.5-5, the same template with other entities 3-3.9, another template of the same topic 1-2.2, a sentence
of another topic 0-0.9 (one decimal). The multi-label `mentions` task lists the entity types (PER, ORG, LOC, MISC) of a
sentence's tags, none for a sentence without entities; the regression `rating` task scores a negative sentence
1-2.2, a neutral one 2.5-3.5 and a positive one 3.8-5 (one decimal).

To keep the data learnable but not trivial, templates share vocabulary across classes: companies appear in
business and sci/tech sentences, cities in every topic, "Barcelona" and "Madrid" are both cities (LOC) and, as
clubs, organisations (ORG), sentiment words are spread over all topics and some sentences are neutral reports.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
from pathlib import Path

SEED = 13
SPLIT_SIZES = {"train": 1000, "validation": 200, "test": 200}
SIMILARITY_SIZES = {"train": 600, "validation": 150, "test": 150}
TARGET_SIZES = {"train": 400, "validation": 100, "test": 100}  # the multi-label and regression tasks
RATINGS = {"negative": (1.0, 2.2), "neutral": (2.5, 3.5), "positive": (3.8, 5.0)}
LOCAL_SIZES = {"train": 300, "test": 100}
TOPICS = ["World", "Sports", "Business", "Sci/Tech"]
SENTIMENTS = ["negative", "neutral", "positive"]
NER_LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]

FIRST = [
    "Anna", "Maria", "John", "David", "Sarah", "Ahmed", "Wei", "Yuki", "Carlos", "Fatima", "Olga", "Pierre",
    "Hans", "Priya", "Kwame", "Lucia", "Tom", "Elena", "José", "Ingrid", "Rahul", "Mei", "Omar", "Grace",
]  # fmt: skip
LAST = [
    "Smith", "Garcia", "Müller", "Chen", "Tanaka", "Okafor", "Rossi", "Novak", "Dubois", "Kowalski", "Silva",
    "Johansson", "Patel", "Kim", "Haddad", "Mensah", "Ivanova", "Brown", "van der Berg", "O'Neill", "Lee",
]  # fmt: skip
COMPANIES = [
    "Apple", "Google", "Microsoft", "Amazon", "Samsung", "Siemens", "Toyota", "Nestlé", "Deutsche Bank",
    "General Motors", "Goldman Sachs", "Airbus", "Boeing", "Unilever", "Tata Motors", "Volkswagen", "Spotify",
    "Netflix", "Intel", "IBM", "Nokia", "Sony", "Alibaba", "Shell",
]  # fmt: skip
TECH_COMPANIES = [
    "Apple", "Google", "Microsoft", "Amazon", "Samsung", "Intel", "IBM", "Nokia", "Sony", "Spotify", "Netflix",
    "Alibaba", "OpenAI", "Nvidia", "Siemens",
]  # fmt: skip
LABS = [
    "NASA", "European Space Agency", "CERN", "MIT", "Max Planck Institute", "Stanford University",
    "University of Tokyo", "Oxford University", "Indian Space Research Organisation",
]  # fmt: skip
GOV_ORGS = [
    "United Nations", "European Union", "Arab League", "World Health Organization", "Red Cross", "African Union",
    "World Bank", "International Monetary Fund",
]  # fmt: skip
TEAMS = [
    "Real Madrid", "Barcelona", "Manchester United", "Bayern Munich", "Juventus", "Ajax", "Boston Celtics",
    "New York Yankees", "Paris Saint-Germain", "Flamengo", "Kaizer Chiefs", "Chelsea",
]  # fmt: skip
CITIES = [
    "Paris", "London", "Berlin", "Tokyo", "New York", "San Francisco", "Madrid", "Barcelona", "Munich", "Sydney",
    "Nairobi", "Buenos Aires", "Mumbai", "Seoul", "Toronto", "Rio de Janeiro", "Cairo", "Geneva", "São Paulo",
    "Singapore", "Lagos", "Istanbul",
]  # fmt: skip
COUNTRIES = [
    "France", "Germany", "Japan", "Brazil", "Kenya", "India", "Canada", "Egypt", "South Africa", "United States",
    "Australia", "Mexico", "Jordan", "Indonesia", "Poland", "Argentina", "South Korea", "Nigeria",
]  # fmt: skip
NATIONALITIES = [
    "German", "French", "Japanese", "Brazilian", "Kenyan", "Indian", "Canadian", "American", "British", "Chinese",
    "Spanish", "Italian", "Nigerian", "Korean",
]  # fmt: skip
EVENTS = [
    "World Cup", "Olympic Games", "Tour de France", "Champions League", "Super Bowl", "Australian Open",
    "Africa Cup of Nations", "Ryder Cup",
]  # fmt: skip
PRODUCTS = ["iPhone", "Windows", "Android", "PlayStation", "Galaxy", "Kindle", "Linux", "Pixel", "Xbox"]
JOBS = ["200", "450", "1,000", "3,000", "12,000"]
NUMBERS = ["two", "three", "five", "ten", "12", "20", "40", "150", "300", "1,200"]
AMOUNTS = ["1.5 billion dollars", "300 million euros", "2 billion dollars", "45 million pounds", "800 million yen"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]

# slot -> (gazetteer, entity type or None)
SLOTS = {
    "PER": (None, "PER"),
    "CO": (COMPANIES, "ORG"),
    "TECH": (TECH_COMPANIES, "ORG"),
    "LAB": (LABS, "ORG"),
    "GOV": (GOV_ORGS, "ORG"),
    "TEAM": (TEAMS, "ORG"),
    "CITY": (CITIES, "LOC"),
    "COUNTRY": (COUNTRIES, "LOC"),
    "NAT": (NATIONALITIES, "MISC"),
    "EVENT": (EVENTS, "MISC"),
    "PRODUCT": (PRODUCTS, "MISC"),
    "NUM": (NUMBERS, None),
    "JOBS": (JOBS, None),
    "AMOUNT": (AMOUNTS, None),
    "DAY": (DAYS, None),
}

# (topic, sentiment, template); {SLOT} fills from SLOTS, everything else is split on spaces.
TEMPLATES = [
    # Business
    ("Business", "neutral", "{CO} is opening a new office in {CITY} ."),
    ("Business", "neutral", "{CO} will report quarterly earnings on {DAY} ."),
    ("Business", "neutral", "{PER} , chief executive of {CO} , will visit {CITY} next week ."),
    ("Business", "neutral", "Shares of {CO} were unchanged in early trading in {CITY} ."),
    ("Business", "neutral", "The central bank of {COUNTRY} kept interest rates on hold ."),
    ("Business", "neutral", "{CO} agreed to buy a stake in {CO} for {AMOUNT} ."),
    ("Business", "positive", "{CO} posted record profits as sales in {COUNTRY} grew strongly ."),
    ("Business", "positive", "Shares of {CO} soared after the company beat forecasts ."),
    ("Business", "positive", "{PER} praised the excellent results of {CO} in {CITY} ."),
    ("Business", "positive", "Investors cheered as {CO} raised its dividend again ."),
    ("Business", "positive", "The {NAT} economy grew faster than expected , boosting markets in {CITY} ."),
    ("Business", "negative", "{CO} cut {JOBS} jobs in {CITY} after weak sales ."),
    ("Business", "negative", "Shares of {CO} plunged after a disappointing profit warning ."),
    ("Business", "negative", "{CO} was fined {AMOUNT} by regulators in {COUNTRY} ."),
    ("Business", "negative", "Unions in {CITY} condemned the decision by {CO} to close its factory ."),
    ("Business", "negative", "Inflation in {COUNTRY} hit a painful high , hurting consumers and retailers ."),
    # Sci/Tech
    ("Sci/Tech", "neutral", "{TECH} unveiled a new {PRODUCT} update at a conference in {CITY} ."),
    ("Sci/Tech", "neutral", "Researchers at {LAB} published a study on climate models ."),
    ("Sci/Tech", "neutral", "{PER} of {LAB} described the telescope data at a meeting in {CITY} ."),
    ("Sci/Tech", "neutral", "{TECH} is opening a research lab in {CITY} ."),
    ("Sci/Tech", "neutral", "The new version of {PRODUCT} will be released on {DAY} ."),
    ("Sci/Tech", "neutral", "{LAB} plans to launch a satellite from {COUNTRY} next year ."),
    ("Sci/Tech", "positive", "Scientists at {LAB} hailed a remarkable breakthrough in battery research ."),
    ("Sci/Tech", "positive", "Reviewers loved the fast and elegant new {PRODUCT} from {TECH} ."),
    ("Sci/Tech", "positive", "{PER} said the successful launch by {LAB} was a great day for science ."),
    ("Sci/Tech", "positive", "{TECH} released a brilliant open source tool that developers in {CITY} praised ."),
    ("Sci/Tech", "positive", "The {NAT} team at {LAB} won an award for its impressive robot ."),
    ("Sci/Tech", "negative", "A serious security flaw in {PRODUCT} exposed millions of users ."),
    ("Sci/Tech", "negative", "{TECH} apologised after an outage left users in {COUNTRY} without service ."),
    ("Sci/Tech", "negative", "The rocket built by {LAB} exploded shortly after launch , a bitter failure ."),
    ("Sci/Tech", "negative", "Critics slammed {TECH} over a buggy {PRODUCT} update that crashed phones ."),
    ("Sci/Tech", "negative", "Hackers stole data from {CO} servers in {CITY} , a worrying breach ."),
    # World
    ("World", "neutral", "{PER} met officials of the {GOV} in {CITY} on {DAY} ."),
    ("World", "neutral", "Voters in {COUNTRY} will elect a new parliament next month ."),
    ("World", "neutral", "The {GOV} held talks in {CITY} about the border between {COUNTRY} and {COUNTRY} ."),
    ("World", "neutral", "The foreign minister of {COUNTRY} , {PER} , arrived in {CITY} ."),
    ("World", "neutral", "{NAT} diplomats are opening a new embassy in {CITY} ."),
    ("World", "neutral", "Delegates from {NUM} countries gathered in {CITY} for the {GOV} summit ."),
    ("World", "positive", "Leaders in {CITY} welcomed a historic peace deal between {COUNTRY} and {COUNTRY} ."),
    ("World", "positive", "The {GOV} praised {COUNTRY} for its remarkable progress against poverty ."),
    ("World", "positive", "Crowds in {CITY} celebrated as {PER} was freed after {NUM} months ."),
    ("World", "positive", "Aid from the {GOV} brought welcome relief to families in {COUNTRY} ."),
    ("World", "positive", "{PER} won the election in {COUNTRY} and promised a hopeful new era ."),
    ("World", "negative", "Deadly floods in {COUNTRY} killed {NUM} people and destroyed homes ."),
    ("World", "negative", "Protesters in {CITY} clashed with police after a disputed vote ."),
    ("World", "negative", "The {GOV} condemned a brutal attack near {CITY} ."),
    ("World", "negative", "Talks between {COUNTRY} and {COUNTRY} collapsed , raising fears of war ."),
    ("World", "negative", "{PER} warned that the crisis in {COUNTRY} was getting worse ."),
    # Sports
    ("Sports", "neutral", "{TEAM} will play {TEAM} in {CITY} on {DAY} ."),
    ("Sports", "neutral", "{PER} joined {TEAM} on a two year contract ."),
    ("Sports", "neutral", "The {EVENT} draw will take place in {CITY} ."),
    ("Sports", "neutral", "{PER} of {COUNTRY} will start the {EVENT} in {CITY} ."),
    ("Sports", "neutral", "{TEAM} named {PER} as its new coach ."),
    ("Sports", "neutral", "The {NAT} squad for the {EVENT} includes {NUM} new players ."),
    ("Sports", "positive", "{PER} scored twice as {TEAM} beat {TEAM} in a thrilling final ."),
    ("Sports", "positive", "{PER} won gold for {COUNTRY} at the {EVENT} in a brilliant race ."),
    ("Sports", "positive", "Fans in {CITY} celebrated after {TEAM} won the {EVENT} ."),
    ("Sports", "positive", "{TEAM} signed {PER} , a superb young striker from {COUNTRY} ."),
    ("Sports", "positive", "The {NAT} sprinter {PER} broke the world record in {CITY} ."),
    ("Sports", "negative", "{TEAM} suffered a humiliating defeat against {TEAM} ."),
    ("Sports", "negative", "{PER} was ruled out of the {EVENT} with a serious knee injury ."),
    ("Sports", "negative", "Fans of {TEAM} booed after a dismal draw in {CITY} ."),
    ("Sports", "negative", "{TEAM} were knocked out of the {EVENT} after a terrible mistake by {PER} ."),
    ("Sports", "negative", "{PER} was banned for {NUM} matches after a violent foul in {CITY} ."),
]

# Sentiment-neutral openers shared by every topic (some name a day), so openers tell nothing about the labels.
OPENERS = [[], [], [], ["On", "{DAY}", ","], ["Earlier", "this", "week", ","], ["According", "to", "reports", ","]]


def person(rng: random.Random) -> list[str]:
    if rng.random() < 0.15:
        return rng.choice(LAST).split()  # surname only, as in news text
    return [rng.choice(FIRST), *rng.choice(LAST).split()]


def fill(rng: random.Random, template: str, opener: list[str]) -> tuple[list[str], list[str]]:
    tokens: list[str] = []
    tags: list[str] = []
    words = template.split()
    if opener and not words[0].startswith("{"):
        words[0] = words[0].lower()  # "Shares of ..." -> "On Monday, shares of ..."
    pieces = [p.replace("{DAY}", rng.choice(DAYS)) for p in opener] + words
    for piece in pieces:
        if piece.startswith("{") and piece.endswith("}"):
            gazetteer, kind = SLOTS[piece[1:-1]]
            words = person(rng) if piece == "{PER}" else rng.choice(gazetteer).split()
            if piece == "{DAY}" or kind is None:
                tokens += words
                tags += ["O"] * len(words)
            else:
                tokens += words
                tags += [f"B-{kind}"] + [f"I-{kind}"] * (len(words) - 1)
        else:
            tokens.append(piece)
            tags.append("O")
    return tokens, tags


def detokenize(tokens: list[str]) -> str:
    text = " ".join(tokens)
    for punct in (" ,", " .", " :", " ;", " ?", " !", " 's"):
        text = text.replace(punct, punct[1:])
    return text


def generate(rng: random.Random, n: int, seen: set[str]) -> list[dict]:
    """n distinct sentences (distinct from `seen` too), balanced over templates."""
    rows = []
    while len(rows) < n:
        if rng.random() < 0.5:
            topic, sentiment, template = TEMPLATES[len(rows) % len(TEMPLATES)]
        else:
            topic, sentiment, template = rng.choice(TEMPLATES)
        opener = rng.choice(OPENERS if "{DAY}" not in template else OPENERS[:3])
        tokens, tags = fill(rng, template, opener)
        text = detokenize(tokens)
        if text in seen:
            continue
        seen.add(text)
        rows.append({"text": text, "tokens": tokens, "ner_tags": tags, "topic": topic, "sentiment": sentiment})
    rng.shuffle(rows)
    return rows


def _sentence(rng: random.Random, template: str) -> tuple[list[str], list[str]]:
    return fill(rng, template, [])


def similarity_pair(rng: random.Random) -> dict:
    """Two sentences and a 0-5 similarity score by construction (see the module docstring)."""
    topic, _, template = rng.choice(TEMPLATES)
    tokens, tags = _sentence(rng, template)
    kind = rng.randrange(4)
    if kind == 0:  # the same sentence behind an opener: a paraphrase
        opener = (
            rng.choice([o for o in OPENERS if o]) if "{DAY}" not in template else ["According", "to", "reports", ","]
        )
        first = tokens[0].lower() if tags[0] == "O" else tokens[0]
        other, score = (
            [p.replace("{DAY}", rng.choice(DAYS)) for p in opener] + [first, *tokens[1:]],
            rng.uniform(4.5, 5),
        )
    elif kind == 1:  # the same template, other entities
        other, score = _sentence(rng, template)[0], rng.uniform(3.0, 3.9)
    else:
        same = kind == 2
        pool = [t for t in TEMPLATES if (t[0] == topic) == same and t[2] != template]
        other, score = _sentence(rng, rng.choice(pool)[2])[0], rng.uniform(1.0, 2.2) if same else rng.uniform(0, 0.9)
    first, second = detokenize(tokens), detokenize(other)
    if rng.random() < 0.5:
        first, second = second, first
    return {"sentence1": first, "sentence2": second, "score": round(score, 1)}


def to_iob1(tags: list[str]) -> list[str]:
    """IOB2 -> IOB1 (as in the original CoNLL-2003 files): B- only where an entity follows one of its type."""
    out = []
    for i, tag in enumerate(tags):
        if tag.startswith("B-") and not (i and tags[i - 1][2:] == tag[2:] and tags[i - 1] != "O"):
            tag = "I-" + tag[2:]
        out.append(tag)
    return out


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def main(out_dir: Path) -> None:
    rng = random.Random(SEED)
    seen: set[str] = set()
    total = sum(SPLIT_SIZES.values())
    pools = {task: generate(rng, total, seen) for task in ("topic", "sentiment", "ner")}
    for task, pool in pools.items():
        start = 0
        for split, size in SPLIT_SIZES.items():
            part = pool[start : start + size]
            start += size
            if task == "topic":
                rows = []
                for r in part:
                    row = {"text": r["text"], "label": r["topic"]}
                    if rng.random() < 0.5:
                        row["sentiment"] = r["sentiment"]
                    rows.append(row)
            elif task == "sentiment":
                rows = [{"text": r["text"], "label": r["sentiment"]} for r in part]
            else:
                rows = [
                    {k: r[k] for k in ("tokens", "ner_tags", "text", "topic", "sentiment")} for r in part
                ]  # fmt: skip
            write_jsonl(out_dir / task / f"{split}.jsonl", rows)

    local = {split: generate(rng, size, seen) for split, size in LOCAL_SIZES.items()}
    (out_dir / "local").mkdir(parents=True, exist_ok=True)
    for split, rows in local.items():
        with open(out_dir / "local" / f"sentiment_{split}.csv", "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(["text", "label"])
            writer.writerows([r["text"], r["sentiment"]] for r in rows)
        with open(out_dir / "local" / f"ner_{split}.conll", "w", encoding="utf-8", newline="\n") as f:
            for i, r in enumerate(rows):
                if i % 25 == 0:
                    f.write("-DOCSTART- O\n\n")
                for token, tag in zip(r["tokens"], to_iob1(r["ner_tags"])):
                    f.write(f"{token} {tag}\n")
                f.write("\n")

    # last, so that the files above come out of the same random draws as before this task existed
    for split, size in SIMILARITY_SIZES.items():
        write_jsonl(out_dir / "similarity" / f"{split}.jsonl", [similarity_pair(rng) for _ in range(size)])

    # after the similarity pairs, again so that every file above keeps its draws
    for split, size in TARGET_SIZES.items():
        rows = generate(rng, 2 * size, seen)
        mentions = [
            {"text": r["text"], "labels": sorted({t[2:] for t in r["ner_tags"] if t != "O"})} for r in rows[:size]
        ]
        ratings = [{"text": r["text"], "score": round(rng.uniform(*RATINGS[r["sentiment"]]), 1)} for r in rows[size:]]
        write_jsonl(out_dir / "mentions" / f"{split}.jsonl", mentions)
        write_jsonl(out_dir / "rating" / f"{split}.jsonl", ratings)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "sample", help="output folder")
    main(parser.parse_args().out)
