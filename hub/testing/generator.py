"""Synthetic source traffic for the hub: a deterministic stream of customer and consent events.

Owns the test and benchmark data model. There are N true persons, each with a
ground-truth `person_id`: mostly GB/US/DE/FR, a few IE/ES/NL, and some of them
living together in households. The module also owns how the source systems
(crm, pos, ecommerce, contact_center, and on request two agencies, registry
and clinic, that keep different sets of fields) each record those persons,
every source with its own habits: typos, nicknames, case, partial birth dates,
birth dates that fail validation (month 00 or 16, day 32, a letter O for a
zero, 1060 for 1960, a date after the event), phone formats, moved addresses,
changed e-mails, swapped names, a household member's birth date copied onto
another's record. Households share a surname and an address, and some have
twins (one birth date, two given names). Last, it owns the time-ordered
stream built from all this: upserts, re-sent updates, deletes, consent events,
and deliberately invalid raw payloads meant for the DLQ.

Pure: no Kafka or Redis. One `random.Random(seed)` drives everything, so a
seed always gives the same stream. Valid customer events are dicts in the
`hub.CustomerEvent` shape and consent events are dicts in the `hub.ConsentEvent`
shape, with every timestamp in epoch milliseconds. Invalid events are raw bytes.
"""

from __future__ import annotations

import bisect
import gc
import heapq
import itertools
import random
import unicodedata
from dataclasses import dataclass
from typing import Iterator

import orjson

__all__ = [
    "GeneratedEvent", "generate", "iter_events", "truth",
    "NICKNAMES", "COUNTRY_ALIASES", "INVALID_REASONS", "SOURCE_PREFIX", "AGENCIES",
]

DAY_MS = 86_400_000
YEAR_2999_MS = 32_472_144_000_000  # 2999-01-01T00:00:00Z
INVALID_REASONS = ("not_decodable", "missing_field", "schema_mismatch",
                   "absurd_value", "oversized", "source_mismatch")
_INVALID_WEIGHTS = (3, 3, 3, 3, 1, 3)  # oversized payloads are big: make them rarer
OVERSIZED_BYTES = 110 * 1024
SOURCE_PREFIX = {"crm": "CRM", "pos": "POS", "ecommerce": "ECOM", "contact_center": "CC", "registry": "REG",
                 "clinic": "CLN"}
# Sources with views of their own besides the four default ones: agencies that
# keep different sets of fields (generate(..., sources=AGENCIES + ...)).
AGENCIES = ("registry", "clinic")


@dataclass
class GeneratedEvent:
    topic: str             # "raw.<source>" for customer events, "consent.events" for consent events
    key: bytes             # b"<source>:<source_id>"
    value: dict | None     # CustomerEvent or ConsentEvent dict; None when `raw` is set
    raw: bytes | None      # only for deliberately invalid events
    person_id: str | None  # ground truth; None for invalid events
    kind: str              # upsert | update | delete | consent | invalid:<reason>


# --------------------------------------------------------------------------- reference data

def _w(text: str) -> tuple[str, ...]:
    return tuple(text.split(","))


_NAMES = {
    "en": (
        _w("Mary,Elizabeth,Katherine,Margaret,Jennifer,Rebecca,Patricia,Susan,Deborah,Victoria,Sarah,Emma,"
           "Olivia,Sophie,Charlotte,Emily,Jessica,Laura,Hannah,Amy,Rachel,Lucy,Chloe,Grace,Anna,Helen,Claire,"
           "Louise,Megan,Natalie,Jane,Alice,Zoe,Ashley,Amanda,Nicole,Michelle,Karen,Linda,Barbara,Priya,Aisha,"
           "Siobhan,Niamh,Catherine,Christine,Abigail,Samantha,Alexandra,Jacqueline"),
        _w("Robert,William,Michael,James,Richard,Thomas,Christopher,Jonathan,Daniel,Matthew,Anthony,Joseph,"
           "Alexander,Benjamin,Samuel,Nicholas,Edward,Charles,Andrew,Stephen,David,John,Paul,Mark,George,Oliver,"
           "Harry,Jack,Jacob,Ryan,Kevin,Brian,Steven,Peter,Simon,Adam,Luke,Liam,Sean,Connor,Mohammed,Raj,Gary,"
           "Ian,Neil,Craig,Jason,Eric,Patrick,Timothy"),
        _w("Smith,Jones,Williams,Taylor,Brown,Davies,Evans,Wilson,Thomas,Johnson,Roberts,Robinson,Thompson,"
           "Wright,Walker,White,Edwards,Hughes,Green,Hall,Lewis,Harris,Clarke,Patel,Jackson,Wood,Turner,Martin,"
           "Cooper,Hill,Ward,Morris,Moore,Clark,Lee,King,Baker,Harrison,Morgan,Allen,James,Scott,Phillips,"
           "Watson,Davis,Parker,Price,Bennett,Young,Griffiths,Mitchell,Kelly,Cook,Carter,Richardson,Bailey,"
           "Collins,Bell,Shaw,Murphy,Miller,Cox,Richards,Khan,Marshall,Anderson,Simpson,Ellis,Adams,Singh,"
           "Begum,Wilkinson,Foster,Chapman,Powell,Webb,Rogers,Gray,Mason,Ali,Hunt,Hussain,Campbell,Matthews,"
           "Owen,Palmer,Holmes,Mills,Barnes,Knight,Lloyd,Butler,Russell,Barker,Fisher,Stevens,Jenkins,Murray,"
           "Dixon,Harvey,Garcia,Martinez,Rodriguez,Hernandez,Lopez,Gonzalez,Nguyen,Kim,Chen,Wong,Rivera,"
           "O'Brien,O'Connor,McDonald,MacLeod,Smith-Jones,Kowalski,Nowak,Fitzgerald,Sullivan,Walsh,Byrne,Ryan"),
    ),
    "de": (
        _w("Anna,Maria,Katharina,Julia,Laura,Lena,Sarah,Lisa,Sabine,Petra,Claudia,Andrea,Stefanie,Nicole,"
           "Susanne,Monika,Ursula,Christina,Johanna,Sophie,Lea,Hannah,Miriam,Jana,Birgit,Elisabeth"),
        _w("Thomas,Michael,Andreas,Stefan,Christian,Markus,Alexander,Johannes,Wolfgang,Klaus,Jürgen,Peter,"
           "Frank,Matthias,Tobias,Jan,Lukas,Felix,Maximilian,Paul,Jonas,Sebastian,Florian,Dieter,Uwe"),
        _w("Müller,Schmidt,Schneider,Fischer,Weber,Meyer,Wagner,Becker,Schulz,Hoffmann,Schäfer,Koch,Bauer,"
           "Richter,Klein,Wolf,Schröder,Neumann,Schwarz,Zimmermann,Braun,Krüger,Hofmann,Hartmann,Lange,Schmitt,"
           "Werner,Schmitz,Krause,Meier,Lehmann,Schmid,Schulze,Maier,Köhler,Herrmann,König,Walter,Mayer,Huber,"
           "Kaiser,Fuchs,Peters,Lang,Scholz,Möller,Weiß,Jung,Hahn,Vogel,Yilmaz,Kaya"),
    ),
    "fr": (
        _w("Marie,Camille,Léa,Manon,Chloé,Inès,Sophie,Nathalie,Isabelle,Sylvie,Catherine,Françoise,Valérie,"
           "Céline,Julie,Aurélie,Émilie,Claire,Anne,Hélène,Élodie,Margaux,Lucie,Pauline,Amélie"),
        _w("Jean,Pierre,Michel,Philippe,Nicolas,Julien,Thomas,Alexandre,Antoine,François,Laurent,Sébastien,"
           "Olivier,Christophe,Frédéric,Mathieu,Hugo,Lucas,Louis,Gabriel,Arthur,Jean-Pierre,Jean-Luc,Rémi,Théo"),
        _w("Martin,Bernard,Dubois,Thomas,Robert,Richard,Petit,Durand,Leroy,Moreau,Simon,Laurent,Lefebvre,"
           "Michel,Garcia,David,Bertrand,Roux,Vincent,Fournier,Morel,Girard,André,Lefèvre,Mercier,Dupont,"
           "Lambert,Bonnet,François,Martinez,Legrand,Garnier,Faure,Rousseau,Blanc,Guérin,Muller,Henry,Roussel,"
           "Nicolas,Perrin,Morin,Mathieu,Clément,Gauthier,Dumont,Lopez,Fontaine,Chevalier,Robin,Benali"),
    ),
    "es": (
        _w("Lucía,María,Carmen,Ana,Laura,Marta,Paula,Elena,Sara,Isabel,Cristina,Pilar"),
        _w("Antonio,José,Manuel,Francisco,David,Javier,Carlos,Alejandro,Pablo,Sergio,Miguel,Jorge"),
        _w("García,Fernández,González,Rodríguez,López,Martínez,Sánchez,Pérez,Gómez,Martín,Jiménez,Ruiz,"
           "Hernández,Díaz,Moreno,Álvarez,Romero,Navarro"),
    ),
    "nl": (
        _w("Emma,Sanne,Lotte,Anouk,Fleur,Eva,Sophie,Lieke,Femke,Iris,Anna,Julia"),
        _w("Daan,Sem,Lucas,Bram,Jesse,Thijs,Ruben,Lars,Pieter,Jeroen,Thomas,Willem"),
        _w("de Jong,Jansen,de Vries,van den Berg,van Dijk,Bakker,Janssen,Visser,Smit,Meijer,de Boer,Mulder,"
           "de Groot,Bos,Vos,Peters,Hendriks,van Leeuwen"),
    ),
}

# Formal given name -> informal variants seen in other systems.
NICKNAMES: dict[str, tuple[str, ...]] = {
    "Robert": ("Bob", "Rob", "Bobby"), "William": ("Bill", "Will", "Billy"), "Elizabeth": ("Liz", "Beth", "Lizzie"),
    "Katherine": ("Kate", "Kathy", "Katie"), "Catherine": ("Cathy", "Kate"), "Michael": ("Mike", "Mick"),
    "James": ("Jim", "Jimmy", "Jamie"), "Richard": ("Rick", "Rich", "Dick"), "Thomas": ("Tom", "Tommy"),
    "Christopher": ("Chris",), "Jonathan": ("Jon", "Jonny"), "Daniel": ("Dan", "Danny"), "Matthew": ("Matt",),
    "Anthony": ("Tony",), "Joseph": ("Joe", "Joey"), "Margaret": ("Maggie", "Peggy", "Meg"),
    "Jennifer": ("Jen", "Jenny"), "Rebecca": ("Becky", "Becca"), "Alexander": ("Alex", "Sandy"),
    "Alexandra": ("Alex", "Sasha"), "Benjamin": ("Ben",), "Samuel": ("Sam",), "Samantha": ("Sam",),
    "Nicholas": ("Nick",), "Patricia": ("Pat", "Trish"), "Victoria": ("Vicky", "Tori"), "Susan": ("Sue", "Susie"),
    "Deborah": ("Debbie", "Deb"), "Edward": ("Ed", "Ted", "Eddie"), "Charles": ("Charlie", "Chuck"),
    "Andrew": ("Andy", "Drew"), "Stephen": ("Steve",), "Steven": ("Steve",), "David": ("Dave",),
    "Timothy": ("Tim",), "Peter": ("Pete",), "Abigail": ("Abby",), "Jacqueline": ("Jackie",),
    "Johannes": ("Hans", "Jo"), "Katharina": ("Kathi", "Katja"), "Maximilian": ("Max",),
    "Elisabeth": ("Lisa", "Elli"), "Sebastian": ("Basti",), "Wolfgang": ("Wolf",), "Francisco": ("Paco",),
    "José": ("Pepe",), "Manuel": ("Manolo",), "Willem": ("Wim",), "Pieter": ("Piet",),
}

_COUNTRIES = ("GB", "US", "DE", "FR", "IE", "ES", "NL")
_COUNTRY_CUM = (38, 68, 82, 94, 96, 98, 100)  # cumulative weights in percent
_LOCALE = {"GB": "en", "US": "en", "IE": "en", "DE": "de", "FR": "fr", "ES": "es", "NL": "nl"}
_COUNTRY_NAMES = {
    "GB": ("GB", "UK", "United Kingdom", "Great Britain"), "US": ("US", "USA", "United States"),
    "DE": ("DE", "Germany", "Deutschland"), "FR": ("FR", "France"), "IE": ("IE", "Ireland"),
    "ES": ("ES", "Spain", "España"), "NL": ("NL", "Netherlands", "Nederland"),
}
# Every spelling the generator writes for a country (lower-cased) -> ISO 3166-1 alpha-2.
COUNTRY_ALIASES: dict[str, str] = {alias.lower(): iso for iso, names in _COUNTRY_NAMES.items() for alias in names}

# city, region, postcode seeds, landline code (GB) or area codes (US)
_CITIES = {
    "GB": (("London", "Greater London", ("SW", "SE", "N", "E", "W", "NW"), "20"),
           ("Manchester", "Greater Manchester", ("M",), "161"), ("Birmingham", "West Midlands", ("B",), "121"),
           ("Leeds", "West Yorkshire", ("LS",), "113"), ("Glasgow", None, ("G",), "141"),
           ("Bristol", None, ("BS",), "117"), ("Edinburgh", None, ("EH",), "131"),
           ("Liverpool", "Merseyside", ("L",), "151"), ("Sheffield", "South Yorkshire", ("S",), "114"),
           ("Nottingham", "Nottinghamshire", ("NG",), "115"), ("Brighton", "East Sussex", ("BN",), "1273"),
           ("Oxford", "Oxfordshire", ("OX",), "1865"), ("Cambridge", "Cambridgeshire", ("CB",), "1223"),
           ("Newcastle upon Tyne", "Tyne and Wear", ("NE",), "191"), ("Reading", "Berkshire", ("RG",), "118")),
    "US": (("New York", "NY", ("100", "101"), ("212", "646", "917")), ("Brooklyn", "NY", ("112",), ("718", "347")),
           ("Los Angeles", "CA", ("900",), ("213", "310", "323")), ("San Francisco", "CA", ("941",), ("415", "628")),
           ("Chicago", "IL", ("606",), ("312", "773")), ("Boston", "MA", ("021",), ("617", "857")),
           ("Seattle", "WA", ("981",), ("206",)), ("Austin", "TX", ("787",), ("512",)),
           ("Houston", "TX", ("770",), ("713", "832")), ("Miami", "FL", ("331",), ("305", "786")),
           ("Atlanta", "GA", ("303",), ("404", "678")), ("Denver", "CO", ("802",), ("303", "720")),
           ("Phoenix", "AZ", ("850",), ("602", "480")), ("Portland", "OR", ("972",), ("503", "971")),
           ("Philadelphia", "PA", ("191",), ("215", "267")), ("Washington", "DC", ("200",), ("202",))),
    "DE": (("Berlin", "Berlin", ("10", "12", "13"), None), ("Hamburg", "Hamburg", ("20", "22"), None),
           ("München", "Bayern", ("80", "81"), None), ("Köln", "Nordrhein-Westfalen", ("50", "51"), None),
           ("Frankfurt am Main", "Hessen", ("60",), None), ("Stuttgart", "Baden-Württemberg", ("70",), None),
           ("Düsseldorf", "Nordrhein-Westfalen", ("40",), None), ("Leipzig", "Sachsen", ("04",), None),
           ("Dresden", "Sachsen", ("01",), None), ("Hannover", "Niedersachsen", ("30",), None)),
    "FR": (("Paris", "Île-de-France", ("75",), None), ("Lyon", "Auvergne-Rhône-Alpes", ("69",), None),
           ("Marseille", "Provence-Alpes-Côte d'Azur", ("13",), None), ("Toulouse", "Occitanie", ("31",), None),
           ("Nice", "Provence-Alpes-Côte d'Azur", ("06",), None), ("Nantes", "Pays de la Loire", ("44",), None),
           ("Bordeaux", "Nouvelle-Aquitaine", ("33",), None), ("Lille", "Hauts-de-France", ("59",), None),
           ("Strasbourg", "Grand Est", ("67",), None)),
    "IE": (("Dublin", "Co. Dublin", ("D02", "D04", "D06", "D08", "D15"), None), ("Cork", "Co. Cork", ("T12", "T23"), None),
           ("Galway", "Co. Galway", ("H91",), None), ("Limerick", "Co. Limerick", ("V94",), None)),
    "ES": (("Madrid", "Madrid", ("280",), None), ("Barcelona", "Barcelona", ("080",), None),
           ("Valencia", "Valencia", ("460",), None), ("Sevilla", "Sevilla", ("410",), None)),
    "NL": (("Amsterdam", "Noord-Holland", ("10",), None), ("Rotterdam", "Zuid-Holland", ("30",), None),
           ("Utrecht", "Utrecht", ("35",), None), ("Den Haag", "Zuid-Holland", ("25",), None),
           ("Eindhoven", "Noord-Brabant", ("56",), None)),
}
_CITY_VARIANTS = {"München": ("Muenchen", "Munich"), "Köln": ("Koeln", "Cologne"), "Düsseldorf": ("Duesseldorf",),
                  "Frankfurt am Main": ("Frankfurt", "Frankfurt a.M."), "New York": ("NYC", "New York City"),
                  "Newcastle upon Tyne": ("Newcastle",), "Sevilla": ("Seville",), "Den Haag": ("The Hague",),
                  "Washington": ("Washington DC",)}
_STREETS = {
    "GB": (_w("High,Church,Station,Park,Victoria,Green,Manor,Kings,Queens,Mill,School,North,London,Windsor,"
              "Grange,Albert,York,Chester,Springfield,Highfield"),
           _w("Road,Street,Lane,Avenue,Close,Drive,Way,Gardens,Crescent")),
    "IE": (_w("Main,Church,Bridge,Castle,Abbey,Dublin,Strand,Mill,Green,O'Connell"), _w("Street,Road,Avenue,Lane,Park")),
    "US": (_w("Main,Oak,Maple,Cedar,Elm,Washington,Park,Lake,Hill,Pine,Sunset,Lincoln,Jackson,Madison,Franklin,"
              "2nd,3rd,5th,Highland,Walnut"), _w("Street,Avenue,Boulevard,Drive,Lane,Road,Court,Place")),
    "DE": (_w("Haupt,Bahnhof,Garten,Schul,Berg,Linden,Goethe,Schiller,Kirch,Wald,Friedrich,Mozart,Dorf,Ring,"
              "Rosen,Birken"), _w("straße,straße,straße,weg,allee")),
    "FR": (_w("rue de la Paix,rue Victor Hugo,avenue des Champs,boulevard Saint-Michel,rue de la République,"
              "rue Jean Jaurès,place de la Mairie,avenue Foch,rue Pasteur,rue du Moulin,rue des Lilas,"
              "boulevard Voltaire,rue Nationale,allée des Tilleuls"), ()),
    "ES": (_w("Calle Mayor,Calle de Alcalá,Avenida de la Constitución,Gran Vía,Calle Real,Paseo del Prado,"
              "Calle del Sol,Avenida de América"), ()),
    "NL": (_w("Kerkstraat,Dorpsstraat,Stationsweg,Molenweg,Schoolstraat,Julianastraat,Prinsengracht,Hoofdstraat,"
              "Beatrixlaan,Marktplein"), ()),
}
_ABBREV = {"Road": "Rd", "Street": "St", "Lane": "Ln", "Avenue": "Ave", "Drive": "Dr", "Close": "Cl",
           "Crescent": "Cres", "Gardens": "Gdns", "Boulevard": "Blvd", "Court": "Ct", "Place": "Pl",
           "straße": "str.", "avenue": "av.", "boulevard": "bd", "Calle": "C/", "Avenida": "Avda."}
_EMAIL_DOMAINS = {
    "GB": _w("gmail.com,gmail.com,outlook.com,hotmail.co.uk,yahoo.co.uk,btinternet.com,icloud.com,sky.com"),
    "US": _w("gmail.com,gmail.com,yahoo.com,outlook.com,aol.com,icloud.com,hotmail.com,comcast.net"),
    "IE": _w("gmail.com,eircom.net,hotmail.com,outlook.com,yahoo.ie"),
    "DE": _w("gmx.de,web.de,t-online.de,gmail.com,posteo.de,outlook.de"),
    "FR": _w("orange.fr,free.fr,gmail.com,laposte.net,sfr.fr,hotmail.fr,wanadoo.fr"),
    "ES": _w("gmail.com,hotmail.es,yahoo.es,telefonica.net"),
    "NL": _w("gmail.com,ziggo.nl,kpnmail.nl,hotmail.nl,outlook.com"),
}
_DOMAIN_TYPOS = {"gmail.com": ("gmial.com", "gmail.co", "gmal.com"), "hotmail.com": ("hotmial.com", "hotmail.con"),
                 "yahoo.com": ("yaho.com",), "outlook.com": ("outlok.com",), "hotmail.co.uk": ("hotmail.co.uk.",)}
_EMPLOYERS = _w("Acme Ltd,Northwind Traders,Globex,Initech,Umbrella Retail,Contoso,Fabrikam,Tailspin Toys,"
                "Wayne Logistics,Stark Engineering,Blue Harbour Bank,Greenfield Foods")
_KEYBOARD = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
_NEIGHBOURS: dict[str, str] = {}
for _row_i, _row in enumerate(_KEYBOARD):
    for _col, _ch in enumerate(_row):
        near = [_row[j] for j in (_col - 1, _col + 1) if 0 <= j < len(_row)]
        for _other in (_row_i - 1, _row_i + 1):
            if 0 <= _other < len(_KEYBOARD) and _col < len(_KEYBOARD[_other]):
                near.append(_KEYBOARD[_other][_col])
        _NEIGHBOURS[_ch] = "".join(near)
_POSTCODE_LETTERS = "ABDEFGHJLNPQRSTUWXYZ"
_EIRCODE_CHARS = "ACDEFHKNPRTVWXY0123456789"
_NI_FIRST = "ABCEGHJKLMNOPRSTWXYZ"
_NI_SECOND = "ABCEGHJKLMNPRSTWXYZ"
_DNI_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"
_ASCII_FOLD = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "Ä": "Ae", "Ö": "Oe", "Ü": "Ue", "ß": "ss"})
_ascii_cache: dict[tuple[str, bool], str] = {}


def _ascii(text: str, german_fold: bool = False) -> str:
    """Strip accents (Müller -> Muller), or transliterate (Müller -> Mueller)."""
    key = (text, german_fold)
    hit = _ascii_cache.get(key)
    if hit is None:
        src = text.translate(_ASCII_FOLD) if german_fold else text
        hit = unicodedata.normalize("NFKD", src).encode("ascii", "ignore").decode()
        _ascii_cache[key] = hit
    return hit


# --------------------------------------------------------------------------- persons

class _Phone:
    """A number as (country calling code, national trunk prefix, national groups)."""
    __slots__ = ("cc", "trunk", "groups", "kind", "country")

    def __init__(self, country: str, cc: str, trunk: str, groups: tuple[str, ...], kind: str):
        self.country, self.cc, self.trunk, self.groups, self.kind = country, cc, trunk, groups, kind

    def fmt(self, style: int) -> str:
        """0 national, 1 international, 2 E.164, 3 compact national, 4 local punctuation, 5 00-prefix."""
        g = self.groups
        if style == 1:
            return f"+{self.cc} " + " ".join(g)
        if style == 2:
            return f"+{self.cc}" + "".join(g)
        if self.country == "US":
            if style == 0:
                return f"({g[0]}) {g[1]}-{g[2]}"
            if style == 3:
                return "".join(g)
            if style == 4:
                return ".".join(g)
            return "-".join(g)
        if style == 0:
            return self.trunk + " ".join(g)
        if style == 3:
            return self.trunk + "".join(g)
        if style == 4:
            if self.country == "FR":
                return self.trunk + ".".join(g)
            return self.trunk + g[0] + ("/" if self.country == "DE" else "-") + "".join(g[1:])
        return f"00{self.cc} " + " ".join(g)


def _ch(r: random.Random, seq):
    """r.choice, about twice as fast (one float draw)."""
    return seq[int(r.random() * len(seq))]


def _rr(r: random.Random, a: int, b: int | None = None) -> int:
    """r.randrange(a) or r.randrange(a, b) from one float draw."""
    if b is None:
        return int(r.random() * a)
    return a + int(r.random() * (b - a))


def _digits(r: random.Random, n: int) -> str:
    return f"{int(r.random() * 10 ** n):0{n}d}"


def _mobile(r: random.Random, country: str, city: tuple) -> _Phone:
    if country == "GB":
        span = _rr(r, 498)  # 7400-7599, 7701-7898, 7900-7999 minus 7911: all valid mobile prefixes
        prefix = 7400 + span if span < 200 else 7701 + span - 200 if span < 398 else 7900 + span - 398
        if prefix == 7911:
            prefix = 7912
        return _Phone(country, "44", "0", (str(prefix), _digits(r, 6)), "mobile")
    if country == "US":
        return _Phone(country, "1", "1", (_ch(r, city[3]), _us_exchange(r), _digits(r, 4)), "mobile")
    if country == "DE":
        if r.random() < 0.4:
            return _Phone(country, "49", "0", (_ch(r, ("151", "152", "157", "159", "176")), _digits(r, 8)), "mobile")
        return _Phone(country, "49", "0", (_ch(r, ("160", "162", "170", "171", "172", "173", "175", "177", "178", "179")),
                                           _digits(r, 7)), "mobile")
    if country == "FR":
        lead = _ch(r, ("60", "61", "62", "64", "65", "66", "67", "68", "73", "75", "76", "77", "78"))
        d = lead + _digits(r, 7)
        return _Phone(country, "33", "0", (d[0], d[1:3], d[3:5], d[5:7], d[7:9]), "mobile")
    if country == "IE":
        return _Phone(country, "353", "0", (_ch(r, ("83", "85", "86", "87", "89")), _digits(r, 3), _digits(r, 4)), "mobile")
    if country == "ES":
        d = "6" + _digits(r, 8)
        return _Phone(country, "34", "", (d[:3], d[3:6], d[6:]), "mobile")
    return _Phone(country, "31", "0", ("6", _ch(r, "1234568") + _digits(r, 7)), "mobile")  # NL


def _us_exchange(r: random.Random) -> str:
    while True:
        ex = _rr(r, 200, 1000)
        if ex != 555 and ex % 100 != 11:
            return str(ex)


def _landline(r: random.Random, country: str, city: tuple) -> _Phone | None:
    if country == "US":
        return _Phone(country, "1", "1", (_ch(r, city[3]), _us_exchange(r), _digits(r, 4)), "home")
    if country != "GB":
        return None
    code = city[3]
    if code == "20":
        return _Phone(country, "44", "0", ("20", _ch(r, "378") + _digits(r, 3), _digits(r, 4)), "home")
    if len(code) == 4:
        return _Phone(country, "44", "0", (code, str(_rr(r, 2, 10)) + _digits(r, 5)), "home")
    return _Phone(country, "44", "0", (code, "2" + _digits(r, 2), _digits(r, 4)), "home")  # x2xx: allocated in every area


def _postcode(r: random.Random, country: str, seed_part: str) -> str:
    if country == "GB":
        letters = _POSTCODE_LETTERS
        return f"{seed_part}{_rr(r, 1, 20)} {_rr(r, 1, 10)}{_ch(r, letters)}{_ch(r, letters)}"
    if country == "US":
        return seed_part + f"{_rr(r, 1, 100):02d}"
    if country == "DE":
        return seed_part + _digits(r, 3)
    if country == "FR":
        if seed_part == "75":
            return f"750{_rr(r, 1, 21):02d}"
        return seed_part + f"{_rr(r, 0, 10) * 10 + _rr(r, 1, 10):03d}"
    if country == "IE":
        c = _EIRCODE_CHARS
        return f"{seed_part} {_ch(r, 'ACDEFHKNPRTVWXY')}{_ch(r, c)}{_ch(r, c)}{_ch(r, c)}"
    if country == "ES":
        return seed_part + f"{_rr(r, 1, 50):02d}"
    return f"{seed_part}{_rr(r, 10, 100)} {_ch(r, 'ABCDEGHJKLMNPRSTVWXZ')}{_ch(r, 'ABCDEGHJKLMNPRSTVWXZ')}"


def _address(r: random.Random, country: str, city: tuple) -> dict:
    names, suffixes = _STREETS[country]
    n = _rr(r, 1, 200)
    line2 = None
    if country in ("GB", "IE"):
        line1 = f"{n} {_ch(r, names)} {_ch(r, suffixes)}"
        if r.random() < 0.12:
            line2 = f"Flat {_rr(r, 1, 30)}"
    elif country == "US":
        line1 = f"{_rr(r, 1, 9999)} {_ch(r, names)} {_ch(r, suffixes)}"
        if r.random() < 0.25:
            line2 = _ch(r, ("Apt ", "Unit ", "Suite ")) + f"{_rr(r, 1, 40)}{_ch(r, 'ABCD')}"
    elif country == "DE":
        line1 = f"{_ch(r, names)}{_ch(r, suffixes)} {n}"
    elif country == "FR":
        line1 = f"{n} {_ch(r, names)}"
    elif country == "ES":
        line1 = f"{_ch(r, names)} {n}"
        if r.random() < 0.5:
            line2 = f"{_rr(r, 1, 9)}º {_ch(r, 'ABCD')}"
    else:
        line1 = f"{_ch(r, names)} {n}"
    return {"line1": line1, "line2": line2, "city": city[0], "region": city[1],
            "postcode": _postcode(r, country, _ch(r, city[2])), "country": country}


def _national_id(r: random.Random, country: str, gender: str, birth: str) -> str:
    if country == "GB":
        return f"{_ch(r, _NI_FIRST)}{_ch(r, _NI_SECOND)}{_digits(r, 6)}{_ch(r, 'ABCD')}"
    if country == "US":
        area = _rr(r, 1, 900)
        if area == 666:
            area = 667
        return f"{area:03d}-{_rr(r, 1, 100):02d}-{_rr(r, 1, 10000):04d}"
    if country == "DE":
        return str(_rr(r, 1, 10)) + _digits(r, 10)
    if country == "FR":
        body = f"{2 if gender == 'F' else 1}{birth[2:4]}{birth[5:7]}{_rr(r, 1, 96):02d}{_digits(r, 3)}{_digits(r, 3)}"
        return f"{body}{97 - int(body) % 97:02d}"
    if country == "IE":
        return _digits(r, 7) + _ch(r, "ABCDEFGHJKLMNPQRSTVWX")
    if country == "ES":
        n = _rr(r, 10 ** 7, 10 ** 8)
        return f"{n}{_DNI_LETTERS[n % 23]}"
    while True:  # NL BSN with the eleven-test
        d = _digits(r, 9)
        if d[0] != "0" and (sum(int(c) * w for c, w in zip(d, (9, 8, 7, 6, 5, 4, 3, 2))) - int(d[8])) % 11 == 0:
            return d


class _Person:
    __slots__ = ("pid", "country", "city", "given", "middle", "family", "gender", "birth", "emails",
                 "old_email", "phones", "address", "old_address", "loyalty", "national_id", "employer", "mates")


def _email_local(r: random.Random, given: str, family: str, birth: str) -> str:
    g = _ascii(given, True).lower().replace(" ", "").replace("'", "")
    f = _ascii(family, True).lower().replace(" ", "").replace("'", "")
    x = r.random()
    if x < 0.3:
        return f"{g}.{f}"
    if x < 0.5:
        return f"{g[0]}{f}"
    if x < 0.65:
        return f"{g}{f}{birth[2:4]}"
    if x < 0.75:
        return f"{f}.{g}"
    if x < 0.88:
        return f"{g}_{f}{_rr(r, 1, 100)}"
    return f"{g}{_rr(r, 1, 1000)}"


def _unique_email(r: random.Random, local: str, domain: str, used: set) -> str:
    addr = f"{local}@{domain}"
    while addr in used:
        addr = f"{local}{_rr(r, 1, 10000)}@{domain}"
    used.add(addr)
    return addr


def _make_household(r: random.Random, first_index: int, size: int, used_emails: set) -> list[_Person]:
    """One person (size 1) or a household sharing address, family name, maybe e-mail and landline."""
    roll = r.random() * 100
    country = _COUNTRIES[bisect.bisect_right(_COUNTRY_CUM, roll)]
    females, males, families = _NAMES[_LOCALE[country]]
    city = _ch(r, _CITIES[country])
    family = _ch(r, families)
    address = _address(r, country, city)
    old_address = _address(r, country, _ch(r, _CITIES[country])) if r.random() < 0.15 else None
    domains = _EMAIL_DOMAINS[country]
    family_email = None
    if size > 1 and r.random() < 0.35:
        local = f"{_ascii(family, True).lower().replace(' ', '').replace(chr(39), '')}{_ch(r, ('family', 's', 'home'))}"
        family_email = _unique_email(r, local, _ch(r, domains), used_emails)
    landline = _landline(r, country, city) if r.random() < (0.5 if size > 1 else 0.2) else None
    adult_year = _rr(r, 1940, 2006)
    taken: set[str] = set()
    members = []
    for k in range(size):
        p = _Person()
        p.pid = f"P{first_index + k:07d}"
        p.country, p.city, p.family = country, city, family
        gx = r.random()
        p.gender = "X" if gx < 0.015 else "F" if gx < 0.51 else "M"
        pool = females if p.gender == "F" or (p.gender == "X" and r.random() < 0.5) else males
        given = _ch(r, pool)
        while given in taken:
            given = _ch(r, pool)
        taken.add(given)
        p.given = given
        p.middle = _ch(r, pool) if r.random() < 0.3 else None
        if p.middle == given:
            p.middle = None
        if k == 0:
            year = adult_year
        elif k == 1:
            year = min(2006, max(1935, adult_year + _rr(r, -6, 7)))
        else:
            year = min(2025, adult_year + _rr(r, 22, 40))
        p.birth = f"{year}-{_rr(r, 1, 13):02d}-{_rr(r, 1, 29):02d}"
        if k >= 3 and r.random() < 0.35:  # twins: the previous child's birth date, another given name
            p.birth = members[-1].birth
        own = _unique_email(r, _email_local(r, given, family, p.birth), _ch(r, domains), used_emails)
        emails = [(own, "personal")]
        if family_email and r.random() < 0.7:
            emails = [(family_email, "personal")] if r.random() < 0.3 else emails + [(family_email, "family")]
        p.employer = None
        if len(emails) == 1 and r.random() < 0.25 and year < 2004:
            p.employer = _ch(r, _EMPLOYERS)
            dom = p.employer.lower().replace(" ", "").replace("ltd", "") + (".co.uk" if country == "GB" else ".com")
            emails.append((_unique_email(r, f"{_ascii(given).lower()}.{_ascii(family).lower().replace(' ', '')}",
                                         dom, used_emails), "work"))
        p.emails = emails
        p.old_email = (_unique_email(r, _email_local(r, given, family, p.birth), _ch(r, domains), used_emails)
                       if r.random() < 0.12 else None)
        phones = [_mobile(r, country, city)]
        if landline is not None and (size > 1 or k == 0):
            phones.append(landline)
        elif r.random() < 0.12:
            second = _mobile(r, country, city)
            second.kind = "work"
            phones.append(second)
        p.phones = phones
        p.address, p.old_address = address, old_address
        p.loyalty = f"L{_digits(r, 9)}" if r.random() < 0.45 else None
        p.national_id = _national_id(r, country, p.gender, p.birth) if r.random() < 0.3 else None
        members.append(p)
    for p in members:  # the others' birth dates (no reference cycle: persons are freed without the GC)
        p.mates = tuple(m.birth for m in members if m is not p)
    return members


# --------------------------------------------------------------------------- source views

def _typo(r: random.Random, s: str) -> str:
    """One keyboard slip: transposition, dropped letter, doubled letter or neighbour key."""
    n = len(s)
    if n < 3:
        return s
    i = _rr(r, 1, n - 1)
    x = r.random()
    if x < 0.3 and s[i] != s[i + 1]:
        return s[:i] + s[i + 1] + s[i] + s[i + 2:]
    if x < 0.55:
        return s[:i] + s[i + 1:]
    if x < 0.75:
        return s[:i] + s[i] + s[i:]
    near = _NEIGHBOURS.get(s[i].lower())
    if not near:
        return s[:i] + s[i + 1:]
    c = _ch(r, near)
    return s[:i] + (c.upper() if s[i].isupper() else c) + s[i + 1:]


def _variant_name(r: random.Random, name: str | None, nick: float, typo: float, fold: float) -> str | None:
    if name is None:
        return None
    if nick and r.random() < nick:
        options = NICKNAMES.get(name)
        if options:
            name = _ch(r, options)
    if fold and r.random() < fold:
        name = _ascii(name, r.random() < 0.5)
    if typo and r.random() < typo:
        name = _typo(r, name)
    return name


def _case(r: random.Random, upper: float, lower: float, *names: str | None) -> tuple:
    x = r.random()
    if x < upper:
        return tuple(n.upper() if n else n for n in names)
    if x < upper + lower:
        return tuple(n.lower() if n else n for n in names)
    return names


def _birth_view(r: random.Random, birth: str, full: float, month: float, year: float,
                slip: float = 0.0) -> str | None:
    x = r.random()
    if x < full:
        return _date_slip(r, birth) if slip and r.random() < slip else birth
    if x < full + month:
        return birth[:7]
    if x < full + month + year:
        return birth[:4]
    return None


def _date_slip(r: random.Random, birth: str) -> str:
    """A full birth date typed so that it fails validation, as real systems
    hold them: month 00 or past 12 (day and month swapped), day 32, a letter O
    for a zero, a mistyped century (1060 for 1960) or one after the event
    (2084 for 1984)."""
    year, month, day = birth[:4], birth[5:7], birth[8:10]
    x = r.random()
    if x < 0.2:
        return f"{year}-00-{day}"
    if x < 0.4 and int(day) > 12:
        return f"{year}-{day}-{month}"
    if x < 0.55:
        return f"{year}-{month}-3{_rr(r, 2, 10)}"
    if x < 0.7 and "0" in birth:
        i = birth.index("0")
        return birth[:i] + "O" + birth[i + 1:]
    if x < 0.85:
        return f"{year[0]}0{year[2:]}-{month}-{day}"
    return f"{int(year[:2]) + 1}{year[2:]}-{month}-{day}"


def _address_view(r: random.Random, p: _Person, kind: str, old_share: float, mess: float, verified: float) -> dict:
    base = p.old_address if p.old_address is not None and r.random() < old_share else p.address
    a = {"line1": base["line1"], "line2": base["line2"], "city": base["city"], "region": base["region"],
         "postcode": base["postcode"], "country": base["country"], "kind": kind, "verified": r.random() < verified}
    if mess and r.random() < mess:
        x = r.random()
        if x < 0.3:
            words = a["line1"].split(" ")
            a["line1"] = " ".join(_ABBREV.get(w, w) for w in words).replace("straße", "str.")
        elif x < 0.45:
            a["line1"] = a["line1"].upper()
            a["city"] = a["city"].upper()
        elif x < 0.6 and a["postcode"]:
            a["postcode"] = a["postcode"].replace(" ", "").lower() if r.random() < 0.4 else a["postcode"].replace(" ", "")
        elif x < 0.7:
            a["city"] = _ch(r, _CITY_VARIANTS.get(a["city"], (a["city"].lower(),)))
        elif x < 0.8:
            a["line1"] = _typo(r, a["line1"])
        if r.random() < 0.5:
            a["region"] = None
        if a["line2"] and r.random() < 0.3:
            a["line1"], a["line2"] = f"{a['line2']}, {a['line1']}", None
    if r.random() < 0.35:
        a["country"] = _ch(r, _COUNTRY_NAMES[base["country"]])
    return a


def _email_view(r: random.Random, address: str, kind: str | None, verified: float, mess: float) -> dict:
    if mess and r.random() < mess:
        local, _, domain = address.partition("@")
        x = r.random()
        if x < 0.4:
            address = f"{local[:1].upper()}{local[1:]}@{domain}" if r.random() < 0.5 else address.upper()
        elif x < 0.7 and domain in _DOMAIN_TYPOS:
            address = f"{local}@{_ch(r, _DOMAIN_TYPOS[domain])}"
        else:
            address = f"{_typo(r, local)}@{domain}"
        verified = 0.0
    return {"address": address, "kind": kind, "verified": r.random() < verified}


def _phone_view(r: random.Random, ph: _Phone, styles: tuple[int, ...], verified: float, typo: float,
                with_kind: bool) -> dict:
    number = ph.fmt(_ch(r, styles))
    if typo and r.random() < typo:  # two neighbouring digits swapped, near the end
        positions = [i for i, c in enumerate(number) if c.isdigit()][-6:]
        i = _rr(r, len(positions) - 1)
        a, b = positions[i], positions[i + 1]
        chars = list(number)
        chars[a], chars[b] = chars[b], chars[a]
        number = "".join(chars)
    return {"number": number, "kind": ph.kind if with_kind else None, "verified": r.random() < verified}


def _gender_view(r: random.Random, g: str, style: int) -> str | None:
    if style == 0:
        return g
    if style == 1:
        return {"F": "female", "M": "male", "X": "non-binary"}[g]
    return _ch(r, ({"F": "Female", "M": "Male", "X": "Other"}[g], g.lower()))


def _blank(source: str, source_id: str, op: str = "upsert") -> dict:
    return {"source": source, "source_id": source_id, "op": op, "event_time": 0, "record_type": "person",
            "given_name": None, "middle_name": None, "family_name": None, "birth_date": None, "gender": None,
            "emails": [], "phones": [], "addresses": [], "national_id": None, "loyalty_id": None,
            "organisation_name": None, "account_ref": None, "lifecycle": None, "converted_from": None,
            "preferences": {}, "consents": [], "invalid_values": {}}


_LANG = {"GB": "en-GB", "US": "en-US", "IE": "en-IE", "DE": "de-DE", "FR": "fr-FR", "ES": "es-ES", "NL": "nl-NL"}


def _view(r: random.Random, p: _Person, source: str, source_id: str) -> dict:
    """How `source` records person `p`: its habits, gaps and mistakes."""
    rec = _blank(source, source_id)
    given, family, middle = p.given, p.family, None
    if source == "pos":
        given = _variant_name(r, given, 0.25, 0.04, 0.3)
        family = _variant_name(r, family, 0.0, 0.03, 0.3)
        given, family = _case(r, 0.35, 0.02, given, family)
        if r.random() < 0.02:
            given, family = family, given
        rec["loyalty_id"] = p.loyalty if p.loyalty and r.random() < 0.9 else None
        if r.random() < 0.8:
            rec["phones"] = [_phone_view(r, p.phones[0], (3, 3, 0), 0.0, 0.01, False)]
        if r.random() < 0.25:
            rec["emails"] = [_email_view(r, p.emails[0][0], None, 0.0, 0.05)]
        if r.random() < 0.2:
            a = _address_view(r, p, "home", 0.4, 0.2, 0.0)
            if r.random() < 0.5:
                a["line1"] = a["line2"] = a["city"] = a["region"] = None
            rec["addresses"] = [a]
        rec["birth_date"] = _birth_view(r, p.birth, 0.08, 0.05, 0.02, 0.03)
        if r.random() < 0.3:
            rec["preferences"] = {"home_store": p.city[0]}
    elif source == "ecommerce":
        given = _variant_name(r, given, 0.1, 0.03, 0.05)
        family = _variant_name(r, family, 0.0, 0.02, 0.05)
        given, family = _case(r, 0.02, 0.15, given, family)
        emails = []
        primary = p.old_email if p.old_email and r.random() < 0.4 else p.emails[0][0]
        emails.append(_email_view(r, primary, "personal", 0.75, 0.03))
        if len(p.emails) > 1 and r.random() < 0.3:
            emails.append(_email_view(r, p.emails[1][0], p.emails[1][1], 0.5, 0.0))
        rec["emails"] = emails
        if r.random() < 0.5:
            rec["phones"] = [_phone_view(r, p.phones[0], (2, 2, 1, 0), 0.3, 0.0, True)]
        if r.random() < 0.9:
            addrs = [_address_view(r, p, "shipping", 0.3, 0.25, 0.4)]
            if r.random() < 0.15:
                addrs.append(_address_view(r, p, "billing", 0.3, 0.1, 0.4))
            rec["addresses"] = addrs
        rec["birth_date"] = _birth_view(r, p.birth, 0.2, 0.06, 0.04, 0.02)
        rec["gender"] = _gender_view(r, p.gender, 1) if r.random() < 0.4 else None
        rec["loyalty_id"] = p.loyalty if p.loyalty and r.random() < 0.3 else None
        if r.random() < 0.5:
            rec["preferences"] = {"language": _LANG[p.country], "newsletter": _ch(r, ("weekly", "monthly", "none"))}
    elif source == "contact_center":
        given = _variant_name(r, given, 0.15, 0.15, 0.1)
        family = _variant_name(r, family, 0.0, 0.15, 0.1)
        given, family = _case(r, 0.06, 0.03, given, family)
        if r.random() < 0.04:
            given, family = family, given
        rec["phones"] = [_phone_view(r, ph, (0, 0, 4, 3, 1, 5), 0.2, 0.03, r.random() < 0.6) for ph in p.phones]
        if r.random() < 0.4:
            addr = p.old_email if p.old_email and r.random() < 0.4 else p.emails[0][0]
            rec["emails"] = [_email_view(r, addr, None, 0.0, 0.15)]
        if r.random() < 0.6:
            rec["addresses"] = [_address_view(r, p, "home", 0.4, 0.5, 0.0)]
        rec["birth_date"] = "0000-00-00" if r.random() < 0.005 else _birth_view(r, p.birth, 0.3, 0.1, 0.1, 0.04)
        rec["gender"] = _gender_view(r, p.gender, 2) if r.random() < 0.3 else None
        rec["national_id"] = p.national_id if p.national_id and r.random() < 0.15 else None
        rec["loyalty_id"] = (p.loyalty.lower() if r.random() < 0.1 else p.loyalty) if p.loyalty and r.random() < 0.3 else None
    elif source == "registry":  # an agency: names, birth, gender, id and address; no contact points
        given = _variant_name(r, given, 0.0, 0.02, 0.0)
        family = _variant_name(r, family, 0.0, 0.02, 0.0)
        given, family = _case(r, 0.5, 0.0, given, family)
        middle = p.middle if p.middle and r.random() < 0.9 else None
        rec["birth_date"] = _birth_view(r, p.birth, 0.97, 0.0, 0.0, 0.03)
        rec["gender"] = _gender_view(r, p.gender, 0) if r.random() < 0.98 else None
        rec["national_id"] = p.national_id if p.national_id and r.random() < 0.8 else None
        rec["addresses"] = [_address_view(r, p, "home", 0.5, 0.1, 0.0)]
    elif source == "clinic":  # another agency: names, birth, gender, a phone and a postcode; no id, no street
        given = _variant_name(r, given, 0.2, 0.05, 0.1)
        family = _variant_name(r, family, 0.0, 0.05, 0.1)
        given, family = _case(r, 0.1, 0.1, given, family)
        middle = p.middle[0] if p.middle and r.random() < 0.5 else None
        rec["birth_date"] = _birth_view(r, p.birth, 0.9, 0.03, 0.02, 0.05)
        rec["gender"] = _gender_view(r, p.gender, 1) if r.random() < 0.9 else None
        if r.random() < 0.8:
            rec["phones"] = [_phone_view(r, p.phones[0], (0, 3, 1), 0.0, 0.02, True)]
        if r.random() < 0.7:
            a = _address_view(r, p, "home", 0.3, 0.1, 0.0)
            a["line1"] = a["line2"] = None
            rec["addresses"] = [a]
    else:  # crm and any other system: the complete, curated record
        given = _variant_name(r, given, 0.05, 0.02, 0.0)
        family = _variant_name(r, family, 0.0, 0.02, 0.0)
        given, family = _case(r, 0.02, 0.0, given, family)
        middle = p.middle if p.middle and r.random() < 0.8 else None
        if middle and r.random() < 0.15:
            middle = middle[0]
        primary = p.old_email if p.old_email and r.random() < 0.4 else p.emails[0][0]
        rec["emails"] = [_email_view(r, primary, p.emails[0][1], 0.4, 0.01)] + [
            _email_view(r, e, k, 0.3, 0.0) for e, k in p.emails[1:]]
        rec["phones"] = [_phone_view(r, ph, (1, 1, 2, 0), 0.3, 0.0, True) for ph in p.phones]
        rec["addresses"] = [_address_view(r, p, "home", 0.5, 0.1, 0.3)]
        rec["birth_date"] = _birth_view(r, p.birth, 0.95, 0.02, 0.0, 0.01)
        rec["gender"] = _gender_view(r, p.gender, 0) if r.random() < 0.95 else None
        rec["national_id"] = p.national_id if p.national_id and r.random() < 0.6 else None
        rec["loyalty_id"] = p.loyalty if p.loyalty and r.random() < 0.5 else None
        rec["organisation_name"] = p.employer if p.employer and r.random() < 0.5 else None
        if r.random() < 0.4:
            rec["preferences"] = {"language": _LANG[p.country]}
    if p.mates and rec["birth_date"] and r.random() < 0.02:
        # a clerk picks the wrong family member: another's birth date on this record
        rec["birth_date"] = _ch(r, p.mates)
    rec["given_name"], rec["family_name"], rec["middle_name"] = given, family, middle
    return rec


# --------------------------------------------------------------------------- consents

_CHANNEL = {"crm": ("any", "email"), "pos": ("sms",), "ecommerce": ("email",), "contact_center": ("phone", "sms")}
_COLLECTION = {"crm": "crm_backoffice", "pos": "pos_till", "ecommerce": "web_checkout",
               "contact_center": "call_centre"}
_PURPOSES = ("marketing", "marketing", "marketing", "analytics", "service")


def _statement(r: random.Random, source: str, purpose: str, channel: str, status: str) -> tuple[dict, int]:
    """A ConsentStatement (times stamped at emission) and its expiry mode: 0 none, 1 future, 2 expired."""
    if purpose == "service":
        basis = "contract"
    else:
        basis = "legitimate_interest" if r.random() < 0.1 else "consent"
    where = "preference_centre" if r.random() < 0.2 else _COLLECTION.get(source, f"{source}_ui")
    evidence = f"{where}:{r.getrandbits(48):012x}"
    stmt = {"purpose": purpose, "channel": channel, "status": status, "legal_basis": basis,
            "effective_at": None, "expires_at": None, "collection_point": where, "notice_version": "v3",
            "evidence": evidence, "event_time": 0}
    x = r.random()
    mode = 0 if status != "granted" or x < 0.8 else 1 if x < 0.9 else 2
    return stmt, mode


def _stamp(stmt: dict, mode: int, t: int, r: random.Random) -> None:
    stmt["event_time"] = t
    stmt["effective_at"] = t - _rr(r, 0, 5000)
    if mode == 1:
        stmt["expires_at"] = t + 365 * DAY_MS
    elif mode == 2:  # collected long ago and already expired when the stream sees it
        expires = t - _rr(r, 1, 180) * DAY_MS
        stmt["expires_at"] = expires
        stmt["effective_at"] = expires - 365 * DAY_MS


# --------------------------------------------------------------------------- updates

def _copy(rec: dict) -> dict:
    new = dict(rec)
    new["emails"] = [dict(e) for e in rec["emails"]]
    new["phones"] = [dict(p) for p in rec["phones"]]
    new["addresses"] = [dict(a) for a in rec["addresses"]]
    new["preferences"] = dict(rec["preferences"])
    new["consents"] = []
    return new


def _update(r: random.Random, rec: dict, p: _Person, used_emails: set) -> dict:
    """The same source record re-sent with one changed field."""
    new = _copy(rec)
    x = r.random()
    if x < 0.2:
        ph = _mobile(r, p.country, p.city)
        view = {"number": ph.fmt(_ch(r, (0, 1, 2))), "kind": "mobile", "verified": False}
        if new["phones"] and r.random() < 0.6:
            new["phones"][0] = view
        else:
            new["phones"].append(view)
    elif x < 0.38:
        if new["emails"] and not new["emails"][0]["verified"] and r.random() < 0.4:
            new["emails"][0]["verified"] = True
        else:
            addr = _unique_email(r, _email_local(r, p.given, p.family, p.birth), _ch(r, _EMAIL_DOMAINS[p.country]),
                                 used_emails)
            new["emails"] = [{"address": addr, "kind": "personal", "verified": r.random() < 0.5}] + new["emails"][1:]
    elif x < 0.55:
        moved = _address(r, p.country, _ch(r, _CITIES[p.country]))
        kind = new["addresses"][0]["kind"] if new["addresses"] else "home"
        moved.update(kind=kind, verified=False)
        new["addresses"] = [moved]
    elif x < 0.67:
        new["given_name"], new["family_name"] = p.given, p.family  # a clerk corrects the name
    elif x < 0.75 and new["birth_date"] != p.birth:
        new["birth_date"] = p.birth
    elif x < 0.82 and p.gender == "F" and new["family_name"]:
        new["family_name"] = _ch(r, _NAMES[_LOCALE[p.country]][2])  # married name
    elif x < 0.9 and not new["loyalty_id"]:
        new["loyalty_id"] = p.loyalty or f"L{_digits(r, 9)}"
    else:
        new["preferences"]["newsletter"] = _ch(r, ("weekly", "monthly", "none"))
    return new


# --------------------------------------------------------------------------- invalid payloads

def _invalid(r: random.Random, reason: str, base: dict, sources: tuple[str, ...], t: int,
             oversized_pool: dict) -> tuple[str, bytes, bytes]:
    """(topic, key, raw bytes) of a deliberately bad payload modelled on a real record."""
    source, sid = base["source"], base["source_id"]
    topic, key = f"raw.{source}", f"{source}:{sid}".encode()
    body = _copy(base)
    body["event_time"] = t
    if reason == "not_decodable":
        if r.random() < 0.5:
            raw = b"\xff\xfe" + r.randbytes(_rr(r, 8, 200))
        else:  # a truncated JSON document with a broken UTF-8 tail
            text = orjson.dumps(body)
            raw = text[: _rr(r, 10, max(11, len(text) - 5))] + b"\xc3"
        return topic, key, raw
    if reason == "missing_field":
        body.pop("source_id" if r.random() < 0.7 else "event_time")
    elif reason == "schema_mismatch":
        x = r.random()
        if x < 0.4:
            body["emails"] = body["emails"][0]["address"] if body["emails"] else "someone@example.com"
        elif x < 0.6:
            body["phones"] = int("".join(c for c in (body["phones"][0]["number"] if body["phones"] else "7700900123")
                                         if c.isdigit()))
        elif x < 0.8:
            # ISO-8601 strings are a valid JSON event_time; a date in words is not
            body["event_time"] = f"{_rr(r, 1, 29)} March 2026"
        else:
            body["given_name"] = [body["given_name"] or "Anna", "x"]
    elif reason == "absurd_value":
        if r.random() < 0.75:
            body["event_time"] = YEAR_2999_MS + _rr(r, 300 * DAY_MS)
        else:
            body["event_time"] = _rr(r, 0, 10 * 365 * DAY_MS)  # the 1970s
        if r.random() < 0.5:
            body["birth_date"] = "0000-00-00"
    elif reason == "oversized":
        pool = oversized_pool.setdefault(source, [])
        if len(pool) >= 4:  # a handful of distinct payloads is enough; reuse them to save memory
            return topic, key, _ch(r, pool)
        body["preferences"] = {"notes": "lorem ipsum dolor sit amet " * (OVERSIZED_BYTES // 27 + 10)}
        raw = orjson.dumps(body)
        pool.append(raw)
        return topic, key, raw
    elif reason == "source_mismatch":
        others = [s for s in sources if s != source] or ["legacy_erp"]
        body["source"] = _ch(r, others)
    return topic, key, orjson.dumps(body)


# --------------------------------------------------------------------------- the stream

_SOURCE_WEIGHT = {"crm": 0.55, "ecommerce": 0.55, "pos": 0.45, "contact_center": 0.35}
_K_CUM = (0.40, 0.75, 0.92, 1.0)  # P(person is in <= 1, 2, 3, 4 sources)
_EMBEDDED_CONSENT = {"ecommerce": 0.3, "crm": 0.15, "pos": 0.1, "contact_center": 0.05}


def _pick_sources(r: random.Random, sources: tuple[str, ...]) -> list[str]:
    """1-4 distinct systems, drawn by how many customers each system sees."""
    k = bisect.bisect_right(_K_CUM, r.random()) + 1
    pool = list(sources)
    weights = [_SOURCE_WEIGHT.get(s, 0.4) for s in pool]
    chosen = []
    for _ in range(min(k, len(pool))):
        pick = r.random() * sum(weights)
        i = 0
        while i < len(pool) - 1 and pick >= weights[i]:
            pick -= weights[i]
            i += 1
        chosen.append(pool.pop(i))
        weights.pop(i)
    return chosen


def _persons(r: random.Random, n_persons: int, used_emails: set) -> Iterator[_Person]:
    index = 0
    while index < n_persons:
        size = 1 if r.random() < 0.92 else min(_rr(r, 2, 5), n_persons - index)
        yield from _make_household(r, index, size, used_emails)
        index += size


def iter_events(n_persons: int, *, seed: int = 7, start_ms: int = 1_767_225_600_000,
                invalid_share: float = 0.03, consent_share: float = 0.15,
                sources: tuple[str, ...] = ("crm", "pos", "ecommerce", "contact_center")) -> Iterator[GeneratedEvent]:
    """Yield the stream in event-time order, a few milliseconds apart.

    `invalid_share` is the approximate fraction of all events that are invalid
    raw payloads. `consent_share` is the probability that a source record gets
    a consent-event history: a grant or denial, sometimes revoked later.
    Each person's records show up over the following few hundred persons'
    worth of traffic, then their updates, consents and deletes later still.
    """
    r = random.Random(seed)
    rnd = r.random
    sources = tuple(sources)
    prefixes = {s: SOURCE_PREFIX.get(s) or s.upper()[:4] for s in sources}
    counters = dict.fromkeys(sources, 0)
    used_emails: set[str] = set()
    oversized_pool: dict[str, list[bytes]] = {}
    invalid_p = min(max(invalid_share, 0.0), 0.95)
    invalid_p = invalid_p / (1.0 - invalid_p)
    heap: list = []
    push = heapq.heappush
    pop = heapq.heappop
    seq = 0
    t = start_ms
    last_customer: dict | None = None
    first_reasons = list(INVALID_REASONS)
    r.shuffle(first_reasons)

    for index, p in enumerate(itertools.chain(_persons(r, n_persons, used_emails), (None,))):
        if p is None:
            limit = float("inf")
        else:
            limit = index
            chosen = _pick_sources(r, sources)
            if rnd() < 0.04:  # a duplicate record inside one system
                chosen.append(_ch(r, chosen))
            pid = p.pid
            for n, source in enumerate(chosen):
                counters[source] += 1
                sid = f"{prefixes[source]}-{counters[source]:06d}"
                rec = _view(r, p, source, sid)
                due = index + (rnd() * 20 if n == 0 else r.expovariate(1 / 200))
                stamps = ()
                if rnd() < _EMBEDDED_CONSENT.get(source, 0.1):
                    status = "denied" if rnd() < 0.15 else "granted"
                    stmt, mode = _statement(r, source, "service" if source == "crm" else "marketing",
                                            _ch(r, _CHANNEL.get(source, ("any",))), status)
                    rec["consents"] = [stmt]
                    stamps = ((stmt, mode),)
                key = f"{source}:{sid}".encode()
                topic = "raw." + source
                push(heap, (due, seq, ("upsert", topic, key, rec, pid, stamps)))
                seq += 1
                last = due
                if rnd() < 0.16:
                    current = rec
                    for _ in range(2 if rnd() < 0.2 else 1):
                        current = _update(r, current, p, used_emails)
                        last += 1 + r.expovariate(1 / 300)
                        push(heap, (last, seq, ("update", topic, key, current, pid, ())))
                        seq += 1
                if rnd() < consent_share:
                    purpose = _ch(r, _PURPOSES)
                    channel = _ch(r, _CHANNEL.get(source, ("any",)))
                    status = "denied" if rnd() < 0.15 else "granted"
                    c_due = due + 1 + rnd() * 100
                    stmt, mode = _statement(r, source, purpose, channel, status)
                    push(heap, (c_due, seq, ("consent", "consent.events", key,
                                             {"source": source, "source_id": sid, "statement": stmt}, pid,
                                             ((stmt, mode),))))
                    seq += 1
                    if status == "granted" and rnd() < 0.4:
                        c_due += 1 + r.expovariate(1 / 500)
                        stmt, mode = _statement(r, source, purpose, channel, "revoked")
                        push(heap, (c_due, seq, ("consent", "consent.events", key,
                                                 {"source": source, "source_id": sid, "statement": stmt}, pid,
                                                 ((stmt, mode),))))
                        seq += 1
                    last = max(last, c_due)
                if rnd() < 0.02:
                    push(heap, (last + 1 + rnd() * 300, seq,
                                ("delete", topic, key, _blank(source, sid, "delete"), pid, ())))
                    seq += 1

        while heap and heap[0][0] <= limit:
            kind, topic, key, value, pid, stamps = pop(heap)[2]
            t += 1 + int(rnd() * 5)
            if kind != "consent":
                value["event_time"] = t
                if kind != "delete":
                    last_customer = value
            for stmt, mode in stamps:
                _stamp(stmt, mode, t, r)
            yield GeneratedEvent(topic, key, value, None, pid, kind)
            if last_customer is not None and invalid_p and rnd() < invalid_p:
                # the first six cover every reason once, so even short streams exercise each
                reason = first_reasons.pop() if first_reasons else r.choices(INVALID_REASONS, _INVALID_WEIGHTS)[0]
                t += 1 + int(rnd() * 5)
                i_topic, i_key, raw = _invalid(r, reason, last_customer, sources, t, oversized_pool)
                yield GeneratedEvent(i_topic, i_key, None, raw, None, f"invalid:{reason}")


def generate(n_persons: int, *, seed: int = 7, start_ms: int = 1_767_225_600_000,
             invalid_share: float = 0.03, consent_share: float = 0.15,
             sources: tuple[str, ...] = ("crm", "pos", "ecommerce", "contact_center")) -> list[GeneratedEvent]:
    """The whole stream as a list (see `iter_events`)."""
    collecting = gc.isenabled()
    gc.disable()  # millions of fresh dicts: cyclic GC passes would double the run time
    try:
        return list(iter_events(n_persons, seed=seed, start_ms=start_ms, invalid_share=invalid_share,
                                consent_share=consent_share, sources=sources))
    finally:
        if collecting:
            gc.enable()


def truth(events) -> dict[str, str]:
    """"<source>:<source_id>" -> person_id for every valid customer event."""
    return {ev.key.decode(): ev.person_id for ev in events
            if ev.value is not None and ev.person_id is not None and ev.topic.startswith("raw.")}


# --------------------------------------------------------------------------- a source system's export file

EXPORT_COLUMNS = ("CustNo", "Changed", "First", "Middle", "Last", "Born", "Gender", "Mail", "Phone", "Street",
                  "Town", "Region", "Postcode", "Country", "Card")
# the column mapping `hub load --mapping` takes for these files
EXPORT_MAPPING = {"CustNo": "source_id", "Changed": "event_time", "First": "given_name", "Middle": "middle_name",
                  "Last": "family_name", "Born": "birth_date", "Gender": "gender", "Mail": "emails",
                  "Phone": "phones", "Street": "addresses.line1", "Town": "addresses.city",
                  "Region": "addresses.region", "Postcode": "addresses.postcode", "Country": "addresses.country",
                  "Card": "loyalty_id"}


def export_rows(records: int, *, seed: int = 7, start_ms: int = 1_767_225_600_000) -> Iterator[dict]:
    """`records` rows of one CSV export holding every source's records (a
    customer in several sources is several rows, to be matched): the first
    view of each source record, as `EXPORT_COLUMNS`."""
    made = 0
    # about 1.7 source records per person: ask for enough persons, stop at `records`
    for event in iter_events(records * 3 // 5 + 10, seed=seed, start_ms=start_ms, invalid_share=0.0,
                             consent_share=0.0):
        if event.kind != "upsert":
            continue
        v = event.value
        address = (v["addresses"] or [{}])[0]
        yield {"CustNo": v["source_id"], "Changed": v["event_time"], "First": v["given_name"],
               "Middle": v["middle_name"], "Last": v["family_name"], "Born": v["birth_date"], "Gender": v["gender"],
               "Mail": ";".join(e["address"] for e in v["emails"]),
               "Phone": ";".join(p["number"] for p in v["phones"]),
               "Street": address.get("line1"), "Town": address.get("city"), "Region": address.get("region"),
               "Postcode": address.get("postcode"), "Country": address.get("country"), "Card": v["loyalty_id"]}
        made += 1
        if made >= records:
            return
