"""Common given-name diminutives (English-speaking and a few European forms):
the `nickname` comparison level, so Bob and Robert are not "different
given names". Pure data; keys and values are folded (lower case, no accents)."""

from __future__ import annotations

_GROUPS = (
    "abigail abby abbie gail", "alexander alex alec sandy xander", "alexandra alex sandra lexi", "alfred alf alfie fred",
    "andrew andy drew", "anthony tony", "arthur art artie", "barbara barb babs", "benjamin ben benny benji",
    "catherine katherine kathryn cathy kathy kate katie kat kitty", "charles charlie chuck chas", "charlotte lottie charlie",
    "christine christina chris chrissie tina", "christopher chris kit topher", "daniel dan danny", "david dave davey",
    "deborah debra deb debbie", "dorothy dot dottie", "edward ed eddie ted ned", "elizabeth liz lizzie beth betty bess eliza lisa libby",
    "eleanor ellie nell nora", "emily em emmy", "frances fran fanny", "francis frank frankie", "frederick fred freddie",
    "gabriel gabe", "gabriella gabrielle gabby", "gregory greg", "harold harry hal", "henry harry hank hal",
    "isabel isabella isabelle izzy bella", "jacob jake", "james jim jimmy jamie", "jennifer jen jenny", "jessica jess jessie",
    "john jack johnny jon", "jonathan jon jonny", "joseph joe joey", "joshua josh", "katherine kate katie", "kenneth ken kenny",
    "lawrence larry laurie", "leonard leo len lenny", "margaret maggie meg peggy marge madge greta", "matthew matt matty",
    "michael mike mick mickey", "nicholas nick nicky", "patricia pat patty trish tricia", "patrick pat paddy",
    "peter pete", "philip phil pip", "rebecca becky becca", "richard rich rick ricky dick", "robert rob bob bobby robbie bert",
    "ronald ron ronnie", "samantha sam sammy", "samuel sam sammy", "sarah sara sally", "stephen steven steve stevie",
    "susan sue susie suzy", "theodore theo ted teddy", "thomas tom tommy", "timothy tim timmy", "victoria vicky tori",
    "walter walt wally", "william will bill billy liam willy", "zachary zach zack",
    "johann johannes hans", "josef sepp", "francois franck", "guillaume guy", "giuseppe beppe pino", "francesco cesco",
)

NICKNAMES: dict[str, frozenset[str]] = {}
for group in _GROUPS:
    names = group.split()
    for name in names:
        NICKNAMES[name] = NICKNAMES.get(name, frozenset()) | frozenset(names)


def same_name(a: str, b: str) -> bool:
    """Whether two different given names are forms of one name."""
    forms = NICKNAMES.get(a)
    return forms is not None and b in forms
