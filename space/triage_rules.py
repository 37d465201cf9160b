"""The triage rule tables: data for safety.py's engine, which compiles and applies them.

- Folding: look-alike letters and common misspellings (`LOOKALIKES`, `APOSTROPHES`, `SPELLING`).
- Situation markers: what tells a message about someone now (`FIRST_PERSON`, `SITUATION`) from a
  textbook question (`VIGNETTE`, `HYPOTHETICAL`, `QUESTION_START`, `QUERY_WORDS`).
- `CATEGORIES`: the call-now categories, most urgent first, each with the guidance line shown for it.

Patterns are regular expressions over the folded message (lower case, words separated by single
spaces, apostrophes gone: see `safety.normalise`); `<KIN>`, `<POSS>`, `<SELF>` and `<NUM5>` stand for
the `FRAGMENTS` below. In a category, `alone` and `in_situation` are lists of alternatives; an
alternative is one pattern, or a tuple of patterns that must all match. Every pattern here is
measured by tests/test_triage.py (recall and banner rate on tests/data/triage_cases.jsonl): change
one, run it, and record the figures in bench/results/triage.json.
"""
from __future__ import annotations

from dataclasses import dataclass, field

# ---- folding ---------------------------------------------------------------------------------
# Cyrillic and Greek letters that imitate Latin ones (`str.maketrans` from, to).
LOOKALIKES = ("аеорсухіјѕԁһкмтвнАЕОРСУХІЈЅКМТВНαοιρτνκχεΑΟΙΡΤΝΚΧΕΒΜΗΖ",
              "aeopcyxijsdhkmtbhaeopcyxijskmtbhaoiptvkxeaoiptnkxebmhz")
APOSTROPHES = "'’‘`´ʼ"  # removed: "can't" -> "cant"
# Common misspellings of the words the patterns key on, written as the patterns expect them.
SPELLING = {
    "siezure": "seizure", "siezures": "seizures", "seisure": "seizure", "seizer": "seizure",
    "siezing": "seizing", "seizuring": "seizing", "seizureing": "seizing", "sezure": "seizure",
    "breath": "breathe", "breth": "breathe", "brethe": "breathe", "breating": "breathing",
    "brething": "breathing", "breahting": "breathing", "breathign": "breathing",
    "unconcious": "unconscious", "unconsious": "unconscious", "unconscience": "unconscious",
    "bleading": "bleeding", "bleding": "bleeding", "bloood": "blood", "poisen": "poison",
    "posion": "poison", "poisioned": "poisoned", "pregant": "pregnant", "pregnat": "pregnant",
    "preggo": "pregnant", "alergic": "allergic", "anaphalaxis": "anaphylaxis",
    "anafalaxis": "anaphylaxis", "ambulence": "ambulance", "overdoes": "overdose",
    "overdosd": "overdosed", "swallowd": "swallowed", "swalloed": "swallowed", "swollowed": "swallowed",
    "tylenols": "tylenol", "tablests": "tablets", "stomache": "stomach", "stomack": "stomach",
    "testical": "testicle", "testicals": "testicles", "testicel": "testicle",
    "cannt": "cant", "carnt": "cant", "caint": "cant", "cannot": "cant", "couldnt": "cant",
    "u": "you", "ur": "your", "pls": "please", "plz": "please", "rn": "right now", "iam": "i am",
}


# ---- what is a person's situation -----------------------------------------------------------
# Topic words fill textbook questions too: these markers say whether a message is about someone now.
FRAGMENTS = {
    "KIN": r"(?:baby|babys|infant|newborn|toddler|kid|kiddo|son|daughter|husband|hubby|wife|partner|"
              r"boyfriend|girlfriend|bf|gf|fiance|fiancee|friend|mate|buddy|mum|mom|mommy|mother|dad|"
              r"daddy|father|brother|bro|sister|sis|grandma|grandpa|grandmother|grandfather|gran|granny|"
              r"nan|nana|nanna|grandad|granddad|grandson|granddaughter|roommate|flatmate|housemate|"
              r"neighbou?r|coworker|colleague|boss|uncle|aunt|auntie|cousin|nephew|niece|teenager|teen|"
              r"someone|somebody|stepdad|stepmom|stepson|stepdaughter|"
              r"child|twins?|classmate|customer|client)",
    "POSS": r"(?:my|his|her|their|our|your)",
    "SELF": r"(?:myself|himself|herself|themselves|themself|yourself|ourselves)",
    "NUM5": r"(?:[5-9]|[1-9][0-9]+|five|six|seven|eight|nine|ten|eleven|twelve|fifteen|twenty|"
            r"thirty|forty|fifty|sixty|hundred|dozens?|several|many|lots of|a lot of|a bunch of|"
            r"bunch of|a handful of|a handful|handful of|loads of|tons of|a ton of|a load of)",
}

FIRST_PERSON = (r"\b(?:my|me|mine|myself|our|us|ourselves|im|ive|i am|i was|i have|i had)\b"
                r"|\bi (?:\w+ )?(?:think|feel|felt|cant|can|could|just|took|take|ate|drank|swallowed|"
                r"got|get|keep|kept|woke|fell|hit|cut|need|dont|did|didnt|want|wanna|might|may|should|"
                r"will|wont|tried|started|used|gave|found|hurt|still|suddenly|accidentally|havent|"
                r"hadnt|wasnt|really|also|do|am|was|have|had|overdosed|coughed|threw|vomited|passed|"
                r"fainted|collapsed|blacked|bumped|banged|burned|burnt|stepped|got|became|noticed|"
                r"know|dont|see|hear|saw)\b")
SITUATION = (
    # third person doing or undergoing something
    r"\b(?:he|she|they|we|hes|shes|theyre|were|<KIN>s?) (?:(?!who|that|which)\w+ )?(?:is|are|was|has|have|had|just|"
    r"cant|wont|isnt|arent|wasnt|keeps?|kept|started|took|ate|drank|swallowed|fell|hit|got|collapsed|"
    r"passed|fainted|looks?|seems?|feels?|felt|says?|said|told|woke|suddenly|accidentally|still|"
    r"doesnt|didnt|went|turned|stopped|began|became|complains?|complained|threw|vomited|coughed)\b"
    r"|\b(?:hes|shes|theyre)\b|\b<POSS> <KIN>\b|\b<SELF>\b"
    r"|\b(?:his|her|their) (?:chest|heart|head|face|arm|arms|leg|legs|lips?|tongue|throat|mouth|eyes?|"
    r"stomach|belly|tummy|abdomen|neck|wrists?|hands?|skin|breathing|breath|speech|words|"
    r"testicles?|balls?|scrotum|pulse|sugar|temperature|temp|fever|pills|meds|medication|medicine|"
    r"inhaler|epipen|water|bleeding|blood|body|nose|ears?|pupils|baby)\b"
    # now, or just now
    r"|\b(?:now|right now|just now|ago|tonight|today|this (?:morning|afternoon|evening)|last night|"
    r"since (?:this|last|yesterday|an hour|\d)|at the moment|all (?:day|night)|for (?:the )?(?:last|past) "
    r"|(?:an|one|two|few|couple of|\d+) (?:mins?|minutes|hours?|hrs?) (?:ago|now)|minutes ago|out of nowhere)\b"
    # asking for help
    r"|\b(?:help (?:me|us|him|her|my|please)|please help|need help|get help|hurry|urgent|urgently|asap|"
    r"911|999|112|000|ambulance|paramedics?|what (?:do|should|can) (?:i|we) do|should (?:i|we) "
    r"(?:go|call|take|be|use|give|worry)|is (?:this|it) (?:an )?(?:emergency|serious)|am i (?:dying|going "
    r"to die|ok)|going to die|dying|scared|terrified|panicking|freaking out|omg|oh god)\b|^help\b|\bhelp$"
)
# Textbook framing: a vignette ("a patient presents with ...") or a generic "if someone has X".
VIGNETTE = (r"\b(?:present(?:s|ed|ing)? (?:with|to)|patients?|most likely|which of the following|"
            r"next (?:best )?step|differential|diagnos(?:is|es|ed))\b")
HYPOTHETICAL = (r"\b(?:in case of|when to seek|what to expect|who is at (?:highest )?risk|"
                r"if (?:i|you|someone|somebody|a person|one) (?:has|have|is|are|gets?))\b")
QUESTION_START = (r"^(?:what|whats|which|how|hows|why|where|when|who|whom|whose|is|are|does|do|did|"
                  r"can|could|should|would|will|in|among|at|for|from|on|during|with|between|besides|"
                  r"under|within|according|by|through|prior|other|to|if|name|list|define|describe|"
                  r"explain|compare|give|tell|outline|discuss|identify|after|before|as|of)\b")
QUERY_WORDS = (r"\b(?:causes?|caused|symptoms?|signs?|treatments?|treat|treated|mechanisms?|definition|"
               r"types?|management|manage|pathophysiology|vs|versus|difference|antidote|dose|dosage|risk|"
               r"prognosis|complications?|prevention|prevent|epidemiology|incidence|meaning|means|"
               r"explained|drugs?|classification|criteria|score|guidelines?|first aid|facts|examples?|"
               r"overview|notes?|quiz|syndrome|disease|disorder|theory|lecture|exam)\b")


# ---- the call-now categories ----------------------------------------------------------------
# Vocabulary shared by several categories.
_INGEST = (r"(?:took|taken|taking|swallowed|swallowing|swallow|ate|eaten|eating|drank|drunk|drinking|"
           r"downed|popped|ingested|consumed|chugged|gulped|snorted|injected|sniffed|huffed|chewed|"
           r"chewing|licked|sucked on|got into|gotten into|overdosed on|odd on|od on|had|has had|necked|"
           r"necking|scoffed|guzzled|knocked back|polished off|finished|emptied|"
           r"put \w+ in (?:his|her|their|my) mouth)")
_DRUGS = (r"(?:acetaminophen|paracetamol|tylenol|panadol|ibuprofen|advil|motrin|nurofen|aspirin|naproxen|"
          r"aleve|\w*codone|oxys?|percocets?|vicodin|morphine|fentanyl|heroin|methadone|tramadol|codeine|"
          r"opioids?|opiates?|xanax|valium|klonopin|ativan|benzos?|\w+azepam|\w+zolam|ambien|zopiclone|"
          r"antidepressants?|amitriptyline|sertraline|prozac|zoloft|lithium|seroquel|quetiapine|insulin|"
          r"metformin|digoxin|warfarin|blood thinners?|beta blockers?|propranolol|adderall|ritalin|"
          r"gabapentin|pregabalin|lyrica|benadryl|diphenhydramine|antihistamines?|cough syrup|melatonin|"
          r"edibles?|gumm(?:y|ies)|cannabis|weed|marijuana|thc|co ?codamol|cocaine|meth|mdma|ecstasy|molly|ketamine|ghb|clonidine|iron|vitamins|"
          r"(?:sleeping|sleep|blood pressure|heart|pain|diet|birth control|water|thyroid|seizure) "
          r"(?:pills|tablets|meds|medication|medicine))")
_DOSE_UNITS = r"(?:pills?|tablets?|tabs|capsules?|caps|gummies|doses|meds|medications?|medicines?|" + _DRUGS + ")"
_POISONS = (r"(?:bleach|drain cleaner|drano|draino|antifreeze|anti freeze|coolant|lye|ammonia|detergent|"
            r"laundry (?:pods?|capsules?|detergent|tablets?)|(?:dishwasher|tide|detergent) (?:pods?|tablets?)|"
            r"oven cleaner|toilet (?:bowl )?cleaner|cleaning (?:products?|fluid|liquid|spray|chemicals?|stuff)|"
            r"disinfectant|windex|poison|rat poison|rodenticide|mouse poison|slug pellets|pesticides?|"
            r"insecticides?|bug spray|weed ?killer|herbicide|roundup|paraquat|fertili[sz]er|gasoline|petrol|"
            r"kerosene|paraffin|lighter fluid|lamp oil|paint thinners?|turpentine|white spirit|acetone|"
            r"nail polish remover|rubbing alcohol|isopropyl|methanol|ethylene glycol|windshield (?:washer )?"
            r"fluid|screenwash|battery acid|(?:button|coin|lithium|watch|small|aa|aaa|hearing aid) (?:cell )?"
            r"batter(?:y|ies)|a batter(?:y|ies)|batteries|magnets?|(?:wild|foraged|random|unknown|strange|"
            r"poisonous|garden|yard|lawn|backyard|forest) (?:mushrooms?|berries|plants?|leaves|seeds)|"
            r"(?:mushrooms?|berries|toadstools?) (?:from|off|in|growing|he|she|they|we|i)|toadstools?|"
            r"oleander|foxglove|yew|hemlock|nightshade|lily of the valley|castor beans?|e ?liquid|"
            r"vape (?:juice|liquid|oil|pod)|nicotine (?:liquid|gum|patch|patches|pouch|pouches)|"
            r"cigarettes?|cigarette butts?|essential oils?|eucalyptus oil|wintergreen|hand sanitizer|"
            r"superglue|pool chlorine|chlorine|mercury|arsenic|cyanide|antifreeze|an overdose|overdose|"
            r"too many|too much|extra|double (?:dose|doses)|(?:a|the|an|half a|half the|whole|entire|full) "
            r"(?:\w+ ){0,2}(?:bottle|pack|packet|box|strip|jar|container|blister|sheet|tub)|all (?:of )?"
            r"(?:my|his|her|their|the) (?:\w+ ){0,2}(?:pills|tablets|meds|medication|medicine|tabs|" + _DRUGS + "))")
_INFANT = (r"\b(?:baby|babys|babies|infant|newborn|new born|neonate|little one|(?:\d+|one|two|three|four|"
           r"five|six|seven|eight|nine|ten|eleven|twelve|a few|few) (?:day|days|week|weeks|wk|wks|month|months|"
           r"mo|mos|mth|mths) old)\b")
_HEAD_EVENT = (r"\b(?:(?:hit|hits|hitting|banged|banging|bumped|bumping|knocked|smacked|struck|whacked|"
               r"cracked|bashed|landed on|fell on|fell onto|fall on|smashed) (?:\w+ ){0,3}(?:head|skull|"
               r"forehead|noggin)|(?:head|skull) (?:injury|trauma|knock|bump|wound|first)|(?:fell|fall|fallen|"
               r"falling|tumbled|slipped) (?:\w+ ){0,4}(?:stairs|ladder|roof|bed|bunk|monkey bars|horse|"
               r"bike|bicycle|balcony|tree|chair|table|changing table|counter|scaffold\w*|wall|trampoline|"
               r"swing|crib|cot|ice|head|skateboard|scooter)|(?:car|bike|motorcycle|motorbike|scooter) "
               r"(?:crash|accident|wreck|collision)|hit by a (?:car|truck|bus|bike|van|lorry|ball|bat)|"
               r"knocked (?:out|unconscious)|(?:knock|blow|hit|bang|bump|kick|punch|whack|kicked|punched) (?:to|on|in) "
               r"(?:the|his|her|my|their) head|(?:after|since) (?:the|a|his|her|my|their) (?:fall|accident|crash|knock|bump))\b")
_HEAD_RED_FLAGS = (r"\b(?:vomit\w*|throw\w* up|threw up|puk\w*|being sick|sick|confus\w*|drows\w*|sleepy|"
                   r"wont wake|hard to wake|unconscious|knocked out|passed out|blacked out|seiz\w*|fits?|"
                   r"clear fluid|fluid (?:from|coming|leaking)|(?:ear|ears|nose) (?:is |are )?(?:bleeding|"
                   r"leaking)|blood\w* (?:\w+ ){0,2}(?:from|out of) (?:\w+ )?(?:ear|ears|nose)|bleeding from "
                   r"(?:\w+ )?(?:ear|ears)|pupils?|double vision|seeing double|blurr\w+|slurr\w+|cant "
                   r"remember|doesnt remember|dont remember|memory|forget\w*|forgot|worst headache|headache "
                   r"(?:\w+ ){0,3}(?:worse|severe|bad|terrible|worsening)|(?:not|isnt|arent|wasnt|stopped) making "
                   r"sense|severe headache|bad headache|"
                   r"blood thinners?|warfarin|eliquis|xarelto|apixaban|anticoagula\w*|acting (?:weird|"
                   r"strange|funny|odd|differently|drunk)|not (?:himself|herself|acting right|making sense)|"
                   r"floppy|limp|numb|cant (?:walk|stand|move|feel|see)|dizzy|stumbling|wont stop crying|"
                   r"crying non ?stop|black eyes|hard|badly|bleeding|blood|unresponsive|out cold|"
                   r"not responding|zoned|dazed|staring|weird|doesnt know|dont know|didnt know|disorient\w*|wandering|"
                   r"doesnt recogni[sz]e|repeating)\b")


@dataclass(frozen=True)
class Category:
    """A call-now category: it is found when any `alone` alternative matches, or any `in_situation`
    alternative matches a message that describes a situation (see the module docstring)."""

    name: str
    guidance: str
    alone: list[str | tuple[str, ...]] = field(default_factory=list)
    in_situation: list[str | tuple[str, ...]] = field(default_factory=list)


CATEGORIES: tuple[Category, ...] = (
    Category(
        "suicide",
        "If you are thinking about suicide or harming yourself, you are not alone: call or text "
        "**988** (US Suicide & Crisis Lifeline), **116 123** (Samaritans, UK/IE), or your local "
        "crisis line, and tell someone near you now.",
        alone=[
            r"\bkill(?:ing)? (?:my|him|her|them|your|our)sel(?:f|ves)\b|\bkms\b|\bkill me\b",
            r"\b(?:end|ending|take|taking|took) (?:my|his|her|their) (?:own )?life\b|\bend(?:ing)? "
            r"(?:it all|things|everything|my suffering)\b",
            r"\b(?:want|wants|wanted|wanna|going|gonna|plan|plans|planning|ready|tried|trying|attempted|"
            r"decided|about) to (?:die|kill|end it|end my|hurt (?:my|him|her)sel|cut (?:my|him|her)sel|"
            r"jump|hang|overdose|od|shoot (?:my|him|her)sel|not wake up|disappear)\b",
            r"\b(?:dont|do not|doesnt|does not|no longer|not) (?:\w+ )?want (?:to )?(?:live|be alive|be here|"
            r"exist|wake up|go on|keep going)\b",
            r"\b(?:better off (?:dead|without me|if i (?:was|were) gone)|no (?:reason|point) (?:to|in) "
            r"(?:keep |keeping )?(?:living|live|going on|being alive|be alive))\b",
            r"\bcant (?:go on|do this anymore|take (?:it|this) anymore|keep living|live like this)\b",
            r"\b(?:no|any|the|dont see (?:the |any )?) ?point (?:in|of) (?:living|going on|life|being alive|"
            r"carrying on)\b|\b(?:not|isnt|never) worth living\b|\bwant (?:it|this|everything) (?:all )?to "
            r"(?:be over|end|stop)\b|\bwant to be dead\b|\bwish (?:i|he|she) (?:was|were|could be) (?:dead|"
            r"gone)\b|\bwish i (?:could )?(?:die|didnt wake up|wasnt here|wasnt alive|was never born|had never "
            r"been born)\b",
            r"\b(?:happier|better|easier) (?:\w+ ){0,3}(?:if|when|once) i (?:was|were|am|m|im) (?:dead|gone)\b"
            r"|\bif i (?:was|were) (?:dead|gone|not here|not around)\b|\bif i (?:died|killed myself)\b",
            r"\b(?:going|gonna|plan|planning|about|want|ready) to (?:take|swallow) (?:all|every|the whole|a whole|an "
            r"overdose|a bottle|the rest)\b",
            r"\b(?:cutting|cut|burning|burned|burnt|harming|hurting|hurt|hitting|scratching|starving) "
            r"(?:my|him|her|them)sel(?:f|ves)\b",
            r"\b(?:goodbye|suicide|farewell) (?:note|letter|message|video)\b",
            r"\b(?:want|wish|hope|wanna|like)(?: \w+){0,6} (?:never|not) (?:\w+ )?wake up\b",
            r"\b(?:jump|jumping) (?:off|from|in front of) (?:a|the|my)\b|\bhang(?:ing)? (?:my|him|her)self\b",
            r"\bhow (?:many|much) (?:\w+ ){0,4}(?:would it take|does it take|to) (?:kill|die|overdose|od|end)\b"
            r"|\b(?:lethal|fatal|deadly) (?:dose|amount) (?:\w+ ){0,4}(?:for me|to kill|to die|to end)\b",
        ],
        in_situation=[
            r"\bsuicid\w*|\bself ?harm\w*|\bselfharm\w*|\bgoodbye forever\b|\b(?:said|saying|says|texted|"
            r"sent) (?:\w+ ){0,3}goodbye\b|\bcant do (?:it|this) anymore\b|\b(?:standing|sitting|stood|up|"
            r"climbed) on (?:the|a|top of the|top of a) (?:bridge|ledge|roof|edge|railing|cliff|balcony)\b|\bon "
            r"the edge of (?:the|a) (?:bridge|roof|building|cliff|platform)\b",
        ],
    ),
    Category(
        "cardiac",
        "Chest pain can be a heart attack: stop what you are doing, sit down, and call emergency "
        "services. Chew an aspirin only if you are not allergic and a professional agrees. "
        "If someone has collapsed and is not breathing normally, start CPR.",
        alone=[
            r"\b(?:chest|heart)(?: \w+){0,2}? (?:hurts?|hurting|is killing|killing me|aches?|aching|is tight|"
            r"feels (?:tight|heavy|like|weird|funny|strange|crushed|squeezed)|is (?:heavy|sore|burning|"
            r"pounding|racing|squeezing))\b",
            r"\b(?:pain|pressure|tightness|heaviness|squeezing|crushing|ache|discomfort|burning|weight) "
            r"(?:\w+ )?(?:in|on|across) (?:my|his|her|their) chest\b",
            r"\b(?:elephant|weight|someone|something) (?:is )?(?:sitting|standing|pressing|on) (?:\w+ )?"
            r"(?:my|his|her) chest\b|\bclutching (?:my|his|her|their) chest\b",
            r"\b(?:im|i am|am i|hes|shes|he is|she is|is he|is she|theyre|i think|having|had|just had|"
            r"might be having|could be having|think)(?: \w+){0,2} (?:a |an )?heart attack\b",
            r"\b(?:no pulse|doing cpr|started cpr|start cpr|giving cpr|chest compressions|need (?:an |the )?"
            r"(?:aed|defibrillator)|(?:went|gone|is|hes|shes) (?:in|into) cardiac arrest)\b",
        ],
        in_situation=[
            r"\bchest (?:\w+ ){0,2}(?:pain|pains|pressure|tight\w*|discomfort|heav\w*|hurt\w*|ache|aching|"
            r"squeez\w*|crush\w*|burning|sore)\b|\b(?:tight|heavy|painful|sore|crushing|squeezing) chest\b"
            r"|\bheart attack\b"
            r"|\bcardiac arrest\b|\bcrushing\b|\bangina\b|\bchest\b.*\b(?:arm|jaw|sweat\w*)\b",
            (r"\b(?:heart|pulse) (?:is )?(?:racing|pounding|beating (?:\w+ )?fast|very (?:fast|slow)|"
             r"fluttering|skipping)|palpitations|racing heart",
             r"\b(?:faint\w*|dizz\w*|pass(?:ed)? out|black(?:ed)? out|chest|breath\w*|collaps\w*)\b"),
            (r"\b(?:left|right)? ?arm (?:is )?(?:numb|tingl\w*|hurts|pain|aching)|\bjaw (?:pain|hurts|aching)",
             r"\b(?:chest|sweat\w*|breath\w*|sick|nause\w*|pale|clammy|grey|gray|ashen|indigestion)\b"),
            (r"\b(?:clammy|cold sweat|grey|gray|ashen)\b", r"\b(?:chest|arm|jaw|indigestion|heart|breath\w*)\b"),
        ],
    ),
    Category(
        "stroke",
        "Stroke signs (face drooping, arm weakness, slurred speech): note the time they started "
        "and call emergency services immediately; every minute counts.",
        alone=[
            r"\b(?:my|his|her|their|<KIN>s) (?:face|mouth|smile|eye|eyelid|lip) (?:\w+ ){0,2}(?:droop\w*|dropped|"
            r"dropping|sagg\w*|lopsided|crooked|uneven|numb|twisted|fell|falling|slanted|slumped)\b",
            r"\bone side of (?:my|his|her|their|the) (?:face|body|mouth)\b|\b(?:left|right) side of (?:my|his|"
            r"her|their) (?:face|body) (?:\w+ ){0,2}(?:numb|weak|droop\w*|paraly\w*|dead|heavy|not working|"
            r"cant)\b|\b(?:half|side) of (?:my|his|her|their) (?:face|body) (?:\w+ ){0,2}(?:numb|weak|"
            r"droop\w*|paraly\w*|dead|heavy|not working)\b",
            r"\b(?:cant|can not|unable to) (?:\w+ )?(?:move|feel|lift|raise|use|hold|grip) (?:\w+ ){0,2}"
            r"(?:arm|leg|hand|side|face|foot)\b",
            r"\bslurr\w* (?:\w+ )?(?:words|speech|talking)\b|\b(?:is|hes|shes|am|im|are|keeps|started) "
            r"(?:\w+ )?slurring\b|\btalking (?:gibberish|nonsense|funny|weird|strange)\b|\b(?:speech|words|"
            r"talking) (?:is |are |has |got |sounds? |seem |seems )?(?:\w+ )?(?:slurred|slurry|jumbled|"
            r"garbled|gibberish|muddled|nonsense)\b|\bcant (?:speak|talk|get (?:\w+ )?words out|find "
            r"(?:\w+ )?words)\b",
            r"\b(?:having|had|has had|is having|suffered|suffering|just had|think \w+ (?:is|has|had)) "
            r"(?:\w+ )?(?:a )?(?:stroke|mini stroke|tia)\b",
            r"\bworst headache (?:of|in) (?:my|his|her|their) life\b|\bworst headache (?:ever|ive ever|"
            r"hes ever|shes ever|i have ever)\b",
            r"\bcant see (?:out of )?(?:one|my|his|her|the left|the right)\b|\b(?:lost|losing) (?:the )?"
            r"(?:vision|sight) in (?:one|my|his|her)\b",
        ],
        in_situation=[
            r"\b(?:stroke|tia|mini stroke|droop\w*|slurred|slurring|thunderclap|paralys\w*|paralyz\w*)\b"
            r"|\b(?:numb|weak)(?:ness)? (?:on|down) one side\b|\bsudden\w* (?:severe|terrible|bad|splitting|"
            r"blinding|worst) headache\b|\b(?:arm|leg|hand|foot|side|face) (?:\w+ )?(?:is |went |has gone |"
            r"feels |keeps |suddenly |gone )?(?:limp|dead|heavy|floppy|numb|weak|not working|useless|dropping|"
            r"drooping|tingly)\b",
            r"\b(?:face|mouth|smile) (?:\w+ ){0,2}(?:droop\w*|uneven|lopsided|crooked|twisted|slanted)\b",
            r"\bsudden\w* (?:\w+ )?(?:weakness|numbness|paralysis|tingling)\b|\b(?:weakness|numbness|paralysis) "
            r"(?:in|of|on|down) (?:\w+ )?(?:right|left|one)\b|\b(?:lost|losing) (?:\w+ )?(?:speech|voice|words)\b",
            r"\b(?:speech|voice|talking|words) (?:\w+ ){0,2}(?:funny|weird|strange|wrong|slurred|jumbled|garbled|"
            r"muddled|mixed|off|gone|lost|stopped)\b|\bmix\w* up (?:\w+ )?words\b|\bcant understand (?:what|me|anything|"
            r"anyone|us)\b|\bsudden\w* (?:\w+ )?(?:confus\w*|disorient\w*|not making sense|dizz\w*|loss of "
            r"balance|double vision|blind\w*|cant (?:speak|talk|walk|see|understand))\b|\b(?:vision|sight) "
            r"(?:\w+ )?(?:double|gone|went|blurry|blurred|lost|black)\b",
        ],
    ),
    Category(
        "breathing",
        "Severe trouble breathing or choking needs emergency help now. For choking, give back blows "
        "and abdominal thrusts (chest thrusts for a baby); if someone stops breathing, start CPR.",
        alone=[
            r"\b(?:cant|can not|unable to|struggling to|struggle to|hard to|hardly|barely|not able to|"
            r"hard time|fighting to|gasping to) (?:\w+ ){0,2}(?:breathe|breathing|get (?:any |enough )?air|"
            r"catch (?:my|his|her|their) breathe)\b",
            r"\b(?:not|isnt|is not|stopped|stop|no longer|hasnt been|wasnt|arent|quit) breathing\b",
            r"\b(?:is|hes|shes|im|am|was|keeps|started|baby|he|she|they|i) (?:\w+ )?(?:choking|gasping)\b"
            r"|\bchok(?:ed|ing) on\b|\bgasping (?:for|to)\b",
            r"\b(?:turning|turned|going|gone|went|getting|is|are|look|looks|looking) (?:\w+ )?(?:blue|purple|"
            r"grey|gray)\b",
            r"\b(?:ribs|chest|skin|belly) (?:\w+ ){0,3}(?:sucking|pulling|caving) in\b",
            r"\binhaler (?:\w+ )?(?:isnt|is not|not|doesnt|does not|wont|didnt) (?:\w+ )?(?:working|helping|"
            r"work|help)\b",
            r"\bsomething (?:is )?(?:stuck|lodged) in (?:my|his|her|their|the) (?:throat|windpipe|airway)\b",
        ],
        in_situation=[
            r"\b(?:short(?:ness)? of breathe|breathless\w*|out of breathe|wheez\w*|(?:difficulty|trouble|"
            r"problems?) breathing|stridor|chok\w*|cyanos\w*|blue lips|asthma attack|respiratory distress|"
            r"cant breathe|breathing (?:is |sounds )?(?:\w+ )?(?:weird|strange|noisy|fast|rapid|shallow|"
            r"labou?red|hard))\b",
            (r"\basthma\b", r"\b(?:bad|severe|attack|cant|inhaler|not working|worse|worst|nothing|struggl\w*)\b"),
            r"\binhaler (?:\w+ )?(?:does nothing|doing nothing|useless|not helping|isnt helping|no help)\b",
            r"\bstruggling for (?:air|breathe)\b|\b(?:gasping|fighting) for (?:air|breathe)\b",
        ],
    ),
    Category(
        "anaphylaxis",
        "Signs of a severe allergic reaction (swelling of the lips, tongue or throat, trouble breathing, "
        "faintness): use an adrenaline (epinephrine) auto-injector if one is available and call "
        "emergency services; a second dose may be needed after 5 minutes.",
        alone=[
            r"\b(?:my|his|her|their) (?:lips?|tongue|face|throat|mouth|eyes?|eyelids?) (?:\w+ ){0,2}"
            r"(?:swell\w*|swollen|puff\w*|tight\w*|closing|closed|itchy)\b",
            r"\b(?:lips?|tongue|face|throat|mouth|eyes?) (?:is|are|feels?|getting|started|starting|keeps) "
            r"(?:\w+ )?(?:swell\w*|swollen|puff\w*|closing|tight\w*|big)\b|\bthroat (?:is )?(?:closing|"
            r"closed|tightening|swelling)\b",
            r"\b(?:having|had|is having|going into|went into|gone into|is in|hes in|shes in|im in) (?:an |a )?(?:\w+ )?(?:allergic "
            r"reaction|anaphyla\w*|anaphylactic shock)\b",
            (r"\b(?:allergic|allergy|allergies) (?:to )?",
             r"\b(?:ate|had|eaten|took|given|got|gave|was given|accidentally|swallowed|drank|stung|bitten)\b",
             r"\b(?:swell\w*|swollen|hives|throat|breathe|breathing|wheez\w*|lips?|tongue|dizzy|faint|itch\w*|"
             r"rash|vomit\w*|reaction)\b"),
            (r"\b(?:stung|sting|stings|bitten) (?:\w+ ){0,3}(?:bee|wasp|hornet|yellow jacket|fire ants?)\b",
             r"\b(?:throat|breathe|breathing|swell\w*|swollen|dizzy|faint|hives|allergic|tongue|lips?|"
             r"wheez\w*)\b"),
        ],
        in_situation=[
            r"\b(?:anaphyla\w*|allergic reaction|epipen|epi pen|epinephrine pen|adrenaline pen|auto ?injector|"
            r"angioedema|throat (?:\w+ ){0,3}(?:tight\w*|itchy|closing|closed|swell\w*|swollen))\b",
            r"\b(?:lips?|tongue|face|eyes?|throat|mouth) (?:\w+ ){0,3}(?:huge|swollen|swell\w*|puffy|puffed|"
            r"massive|big|fat|blown up|thick)\b|\b(?:swell\w*|swollen) (?:of|in) (?:\w+ )?(?:tongue|lips?|face|"
            r"throat|mouth)\b",
            (r"\b(?:ate|eaten|eating|took|after|given|stung|allerg\w*)\b",
             r"\bvoice (?:\w+ )?(?:hoarse|croaky|changed|different|strange|squeaky)\b|\bhoarse\b"),
            (r"\bhives\b", r"\b(?:throat|breathe|breathing|swell\w*|swollen|dizzy|faint|tongue|lips?|swallow\w*|wheez\w*)\b"),
        ],
    ),
    Category(
        "poisoning",
        "For an overdose or poisoning, call emergency services or your poison control centre "
        "(1-800-222-1222 in the US) now; do not make the person vomit unless told to. For a "
        "swallowed button battery, go to an emergency department at once.",
        alone=[
            rf"\b{_INGEST} (?:\w+ ){{0,4}}?{_POISONS}\b",
            rf"\b{_INGEST} (?:\w+ ){{0,3}}?<NUM5> (?:\w+ ){{0,3}}?{_DOSE_UNITS}\b",
            rf"\b{_INGEST} (?:\w+ ){{0,2}}?<NUM5> (?:of )?(?:\w+ )?{_DRUGS}\b",
            r"\b(?:overdosed|overdosing|oded|poisoned|poisoning (?:my|him|her|them)self)\b|\b(?:odd|od) on\b"
            r"|\b(?:he|she|i|they|just|friend|has|have|had|may have|might have) (?:odd|od)\b",
            r"\baccidentally (?:took|swallowed|ate|drank|ingested|gave|injected|had)\b",
            r"\b(?:baby|babys|toddler|kid|child|son|daughter|little (?:one|boy|girl)|\d+ (?:year|yr|month) "
            r"old|grandson|granddaughter|nephew|niece) (?:(?!who |that |which )\w+ ){0,3}(?:swallowed|ate|eaten|drank|"
            r"drunk|chewed|licked|got into|ingested|sucked on|put (?:\w+ ){0,3}in (?:his|her|their) mouth)\b",
            r"\b(?:co|carbon monoxide) (?:alarm|detector)\b",
        ],
        in_situation=[
            r"\b(?:poison\w*|overdose|toxic|toxicity|ingest\w*|swallowed|carbon monoxide|fumes|gas leak|"
            r"smell gas|smells of gas)\b",
            (rf"\b{_INGEST}\b", rf"\b(?:pills?|tablets?|tabs|capsules?|meds|medications?|medicines?|{_DRUGS}|"
                                rf"{_POISONS})\b"),
            r"\b(?:whole|entire|full|half a|half the|half of the) (?:\w+ )?(?:bottle|pack|packet|box|strip|blister|"
            r"jar|tub|sheet|container|prescription)\b",
            (rf"\b{_INGEST}\b", r"\b(?:plant|plants|leaves|leaf|berries|berry|mushrooms?|seeds|flowers?|bulbs?|"
                                r"lily|lilies)\b"),
            r"\b(?:mixed|mixing) (?:\w+ ){0,3}(?:bleach|ammonia|chemicals|cleaning|cleaners)\b|\b(?:breathed|"
            r"inhaled|breathing|inhaling) (?:in )?(?:\w+ )?(?:fumes|gas|smoke|chemicals?)\b",
        ],
    ),
    Category(
        "bleeding",
        "For severe bleeding, press firmly on the wound with a clean cloth without letting go "
        "and call emergency services.",
        alone=[
            r"\b(?:bleeding|bleeds|bleed|bled) (?:\w+ ){0,2}?(?:a lot|heavily|badly|everywhere|profusely|"
            r"nonstop|non stop|like crazy|so much|really bad|wont stop|will not stop|doesnt stop|isnt "
            r"stopping|not stopping|hasnt stopped|through|out|to death|all over|too much|like a tap)\b",
            r"\b(?:wont|will not|cant|doesnt|isnt|not|never) (?:\w+ )?(?:stop|stopping) (?:the )?bleeding\b"
            r"|\bkeeps? (?:on )?bleeding\b|\bstill bleeding\b|\bbleeding (?:for|since) (?:an|\d+|the last|"
            r"hours|over|half)\b",
            r"\bblood (?:is |keeps )?(?:\w+ )?(?:everywhere|spurting|gushing|pouring|squirting|pumping|pulsing|"
            r"soaking|all over|wont stop)\b|\b(?:spurting|gushing|pouring|squirting|pumping|losing|lost) "
            r"(?:\w+ ){0,3}blood\b|\b(?:lot|lots|so much|pool) of blood\b",
            r"\b(?:soaked|soaking) (?:through )?(?:\w+ )?(?:towels?|bandages?|pads?|gauze|shirt|clothes|"
            r"sheets|tampons?|cloths?)\b",
            r"\b(?:threw up|throwing up|vomited|puking|puked|coughed up|coughing up|spat up|spitting up|"
            r"pooping|pooped|peeing|passing|passed|pissing) (?:\w+ ){0,3}(?:blood|bright red|clots)\b",
            r"\b(?:been|got|get|was|were|is|getting|just|has been|have been|ive been|im) (?:\w+ )?(?:stabbed|"
            r"shot|knifed|impaled|slashed|glassed)\b",
            r"\b(?:cut|chopped|sliced|severed|ripped|torn|sawed|sawn) (?:\w+ ){0,3}(?:off|open)\b"
            r"|\bsevered (?:an )?artery\b",
        ],
        in_situation=[
            r"\b(?:bleed\w*|bled|haemorrhag\w*|hemorrhag\w*|gash\w*|laceration|deep (?:cut|wound)|stab wound|amputat\w*|"
            r"gunshot|nosebleed|vomiting blood|gushing|spurting|squirting|pumping|(?:wound|cut|stitches|incision) "
            r"(?:\w+ )?(?:reopened|opened|split|burst)|blood (?:\w+ ){0,2}(?:coming|pouring|running|dripping|streaming|"
            r"leaking|oozing)|(?:ear|ears|nose|mouth) (?:is |are )?bleeding|blood in (?:\w+ )?(?:vomit|stool|poop|urine|pee)|black (?:tarry )?"
            r"(?:poop|stool|poo)|tarry|coffee grounds?)\b",
        ],
    ),
    Category(
        "unresponsive",
        "If someone is unresponsive, call emergency services and check their breathing; if they are "
        "not breathing normally, start CPR, otherwise place them on their side.",
        alone=[
            r"\b(?:passed out|fainted|blacked out|keeled over|lost consciousness|went unconscious|fell "
            r"unconscious|went limp|gone limp|goes limp|slumped over|collapsed(?! (?:lung|vertebra|alveoli|"
            r"trachea|veins?|disc)))\b",
            r"\b(?:wont|will not|cant|not|isnt|unable to|hard to|difficult to|couldnt|doesnt|wouldnt|didnt)"
            r"(?: \w+){0,4} (?:wake|waking|woken|rouse|rousing|arouse|come round|come to|open (?:his|her|their|"
            r"my) eyes)\b",
            r"\b(?:is|was|hes|shes|been|found|lying|went|seems|looks|became|im|still) (?:\w+ ){0,2}"
            r"(?:unconscious|unresponsive)\b(?! to)",
            r"\b(?:not|isnt|wont|stopped|no longer|hasnt been|arent) (?:\w+ )?(?:responding|responsive|reacting|"
            r"moving|respond)\b|\bout cold\b",
            r"\b(?:in and out of consciousness|drifting in and out|barely conscious|semi conscious|"
            r"barely awake|cant stay awake|cant (?:keep|get) (?:\w+ )?(?:awake|up)|"
            r"(?:dropped|fell|went down|slumped|crumpled) (?:down )?(?:to|on|onto) the (?:floor|ground|deck)|"
            r"hit the (?:floor|ground)|lying (?:there|on the (?:floor|ground|pavement|road)) (?:\w+ )?(?:not|and)|"
            r"cant (?:get|make) (?:\w+ ){0,2}(?:to )?(?:wake|respond|answer|open))\b",
        ],
        in_situation=[
            r"\b(?:unconscious|unresponsive|faint\w*|collaps\w*|pass(?:ed|ing)? out|black(?:ed|ing)? out|"
            r"loss of consciousness|coma|not responding|limp|went down|gone down|goes down|fell down|dropped)\b",
            r"\b(?:very|really|so|extremely|super) (?:drowsy|sleepy|confused)\b.*\b(?:confus\w*|drowsy|sleepy|"
            r"awake|floppy|weird)\b",
            (r"\b(?:sugar|glucose|bg|bs|bgl)\b",
             r"\b(?:is |of |at |reading |level |dropped to |down to |only |reads )(?:[1-4][0-9]|[1-9])"
             r"(?:\.[0-9])?\b|\b(?:low|hypo\w*|crashed|dropped|dropping)\b"),
            r"\b(?:hypo|hypoglyc\w*|low (?:blood )?sugar)\b",
            (r"\bdiabet\w*", r"\b(?:confus\w*|sweat\w*|shak\w*|drows\w*|not making sense|slurr\w*|weird)\b"),
        ],
    ),
    Category(
        "seizure",
        "If someone is having a seizure, call emergency services, keep them safe from injury, put "
        "nothing in their mouth, time it and, once it stops, place them on their side.",
        alone=[
            r"\b(?:having|had|has had|just had|keeps having|kept having|is having|started having|"
            r"in the middle of) (?:\w+ ){0,2}(?:seizures?|fits?|convulsions?)\b",
            r"\b(?:seizing|convulsing|fitting)\b(?! (?:in|into|the|with))",
            r"\b(?:shaking|jerking|twitching|thrashing|shuddering) (?:\w+ ){0,2}(?:all over|uncontrollably|"
            r"violently|everywhere|and (?:\w+ )?(?:not|wont|isnt|cant) (?:\w+ )?(?:respond\w*|wake|stop))\b"
            r"|\b(?:arms?|legs?|body|face) (?:\w+ ){0,3}(?:jerking|shaking|twitching|stiff|rigid) (?:\w+ ){0,2}"
            r"(?:and|not|wont|cant|isnt|eyes)\b",
            r"\beyes (?:\w+ )?(?:rolled|rolling) (?:back|up)\b|\bfoaming at the mouth\b",
        ],
        in_situation=[
            r"\b(?:seizures?|convuls\w*|epilep\w*|status epilepticus|febrile fit|fits|jerky (?:movements|"
            r"motions|episodes)|staring spells?|jerking (?:movements|episodes))\b",
            (r"\b(?:stiff|rigid|went stiff|going stiff|stiffened)\b",
             r"\b(?:jerk\w*|shak\w*|shook|twitch\w*|convuls\w*|fit\w*|trembl\w*)\b"),
            r"\b(?:jerking|shaking|twitching|convulsing|thrashing) (?:\w+ ){0,2}(?:on the (?:floor|ground|bed)|"
            r"and (?:\w+ )?(?:not|wont|isnt|cant|unresponsive|drool\w*|foam\w*)|for \d+)\b",
        ],
    ),
    Category(
        "head_injury",
        "After a head injury, vomiting, confusion, drowsiness, a seizure, a worsening headache, clear "
        "fluid from the nose or ears, or taking blood thinners mean emergency care now.",
        alone=[(_HEAD_EVENT, _HEAD_RED_FLAGS)],
        in_situation=[r"\b(?:concussion|skull fracture|brain bleed|bleed on the brain|head injury)\b"],
    ),
    Category(
        "obstetric",
        "Bleeding, severe pain, a severe headache with vision changes, fluid loss or a baby moving less, "
        "during pregnancy or after birth, needs emergency care now: call emergency services or your "
        "maternity unit.",
        alone=[
            (r"\b(?:im|i am|shes|she is|wife is|girlfriend is|partner is|were|we are) (?:\w+ )?(?:\d+|"
             r"\w+teen|twenty\w*|thirty\w*) (?:weeks?|wks?)\b|\b\d+ (?:weeks?|wks?) (?:pregnant|along)\b",
             r"\b(?:bleed\w*|bled|blood|clots?|spotting|pain|cramp\w*|headache|vision|spots|flashing|water|"
             r"fluid|moving|movement|kicking|contractions)\b"),
            r"\b(?:soaking|soaked|filling|filled) (?:\w+ ){0,2}pads?\b",
            r"\b(?:havent|not|hasnt|didnt|cant|stopped) (?:\w+ )?(?:felt|feel|feeling) (?:the |my |our |her )?"
            r"baby (?:\w+ )?(?:move|moving|kick\w*)|\bbaby (?:hasnt|isnt|stopped|not|has not|is not) (?:\w+ )?"
            r"(?:moved|moving|kicking|kicked)\b",
        ],
        in_situation=[(
            r"\b(?:pregnan\w*|expecting|trimester|gave birth|given birth|had (?:a|the|my|our|her) baby|"
            r"delivered|deliver\w*|postpartum|post partum|after (?:the )?birth|after delivery|c ?section|"
            r"caesarean|cesarean|miscarr\w*|water broke|waters broke|contractions|labou?r|\d+ (?:weeks?|wks?)"
            r"|ectopic|placenta)\b",
            r"\b(?:bleed\w*|bled|blood|clots?|spotting|hemorrhag\w*|haemorrhag\w*|soak\w*|severe|bad|"
            r"terrible|sharp|awful|agony|pain on one side|shoulder (?:tip )?pain|seeing (?:spots|flashing|"
            r"stars|lights)|flashing lights|blurr\w* vision|headache|seizure|fit|not moving|stopped moving|"
            r"isnt moving|hasnt moved|no movement|moving less|not kicking|cord|coming out|dizzy|faint\w*)\b",
        )],
    ),
    Category(
        "infant",
        "A baby under 3 months with a temperature of 38 °C (100.4 °F) or more, or any baby who is "
        "floppy, hard to wake, breathing fast or not feeding, needs urgent medical care now.",
        in_situation=[
            (_INFANT,
             r"\b(?:fever\w*|temp\w*|febrile|hot|burning up|roasting|(?:3[89]|4[0-2])(?:\.[0-9])? ?(?:c|"
             r"degrees)?|10[0-6](?:\.[0-9])? ?(?:f|degrees)?)\b"),
            (_INFANT,
             r"\b(?:floppy|limp|lethargic|listless|unresponsive|wont (?:wake|feed|eat|drink|nurse|latch|take)|"
             r"not (?:waking|feeding|eating|drinking|nursing|feeding well|responding|moving)|hard to wake|"
             r"difficult to wake|(?:very|really|super|so|unusually) (?:sleepy|drowsy|pale|weak|quiet)|weak cry|"
             r"high pitched|moaning|grunting|bulging|sunken|soft spot|fontanel\w*|doesnt fade|does not fade|"
             r"wont fade|dont fade|non ?blanching|glass test|mottled|blue|no wet|dry (?:diapers|nappies)|"
             r"refus\w+ (?:\w+ )?(?:feeds?|to feed|bottle|breast)|wont wake|fast breathing|breathing fast)\b"),
        ],
    ),
    Category(
        "meningitis_sepsis",
        "A rash that does not fade when a glass is pressed on it, or fever with a stiff neck, confusion, "
        "mottled or cold skin, can be meningitis or sepsis: call emergency services now.",
        in_situation=[
            r"\b(?:purple|dark red|red|pinpoint|blotchy) (?:\w+ )?(?:spots|rash|blotches|dots|pinpricks)\b"
            r"|\b(?:spots|rash) (?:\w+ ){0,5}(?:dont|doesnt|wont|do not|does not|didnt) (?:\w+ )?(?:go away|fade|"
            r"disappear|blanch|change)\b|\bnon ?blanching\b|\bglass test\b|\bpetechia\w*|\bmeningitis\b",
            (r"\bstiff neck|neck (?:is )?(?:\w+ )?stiff\b|\bcant (?:\w+ )?(?:bend|move|touch) (?:\w+ )?(?:neck|chin)\b",
             r"\b(?:fever\w*|temp\w*|hot|rash|vomit\w*|headache|light|confus\w*|drowsy|sleepy)\b"),
            (r"\b(?:fever\w*|temperature|temp|infection|sepsis|septic)\b",
             r"\b(?:mottled|blotchy skin|cold (?:hands|feet|skin)|confus\w*|not making sense|shivering uncontrollably|"
             r"rigors|very fast breathing|blue|slurr\w*|not peed|no urine|sepsis|septic)\b"),
        ],
    ),
    Category(
        "drowning",
        "After drowning or a near-drowning, call emergency services even if the person seems to "
        "recover; if they are not breathing, start CPR.",
        alone=[
            r"\b(?:nearly|almost|just) (?:\w+ )?drown\w*|\b(?:is|are|was|were|been|got|hes|shes|someone|somebody|kid|"
            r"child|boy|girl|man|woman|baby|toddler) drowning\b|\bdrowned\b",
            r"\b(?:pulled|fished|dragged|got|took|rescued|found|lifted|hauled|brought) (?:\w+ ){0,3}(?:out of|"
            r"from|from under|in) (?:the |a )?(?:\w+ )?(?:pool|water|lake|river|sea|ocean|bath|bathtub|tub|"
            r"pond|canal|surf|waves|hot tub|beach)\b",
            r"\b(?:face ?down|floating|unconscious|lifeless) (?:\w+ ){0,2}(?:in|on) (?:the |a )?(?:\w+ )?(?:pool|"
            r"water|lake|river|sea|bath|bathtub|tub|pond|canal)\b",
        ],
        in_situation=[
            r"\b(?:drown\w*|submer\w*|went under|under ?water|under the water|head under)\b",
            r"\b(?:bottom of|face down in|floating in|fell in|fell into|found (?:\w+ )?in|pulled from|lying in) "
            r"(?:the|a) (?:\w+ )?(?:pool|pond|lake|river|sea|bath|bathtub|tub|canal|water|ocean)\b",
            (r"\b(?:swallowed|inhaled|breathed in|choked on) (?:\w+ ){0,2}water\b",
             r"\b(?:pool|sea|lake|river|bath|swim\w*|under|ocean|beach)\b"),
        ],
    ),
    Category(
        "envenomation",
        "For a venomous bite or sting, call emergency services, keep the person still and calm and the "
        "bitten limb still; remove rings and tight items; do not cut, suck or ice the wound.",
        alone=[
            r"\b(?:bitten|bit|stung|stabbed|spiked|stepped on|touched|grabbed|got bit|got bitten|got stung|"
            r"been bitten|been stung) (?:\w+ ){0,3}(?:snakes?|rattlesnakes?|rattlers?|vipers?|adders?|cobras?|"
            r"mambas?|krait|taipan|copperheads?|cottonmouths?|water moccasins?|moccasins?|coral snakes?|spiders?|"
            r"black widows?|redbacks?|brown recluses?|recluses?|funnel ?webs?|scorpions?|jelly ?fish|box "
            r"jelly\w*|man o war|portuguese man|irukandji|stonefish|sting ?rays?|lionfish|cone snails?|blue "
            r"ringed octopus|octopus|sea snakes?|gila monsters?|centipedes?|weever fish)\b",
            r"\b(?:snakes?|rattlesnakes?|rattlers?|vipers?|adders?|cobras?|copperheads?|cottonmouths?|spiders?|"
            r"black widows?|brown recluses?|recluses?|scorpions?|jelly ?fish|centipedes?) (?:\w+ ){0,2}"
            r"(?:bit|bitten|stung|got|bites|stings|attacked|has bitten) (?:me|him|her|them|my|us|our|his|"
            r"their|someone)\b",
            r"\b(?:snake|spider) ?bites? (?:on|to|in) (?:my|his|her|their)\b|\b(?:my|his|her|their) (?:snake|"
            r"spider) ?bite\b",
        ],
        in_situation=[
            r"\b(?:snake ?bites?|envenom\w*|venom\w*|spider bites?|scorpion stings?|jelly ?fish stings?|"
            r"(?:bite|sting|fang) marks)\b",
        ],
    ),
    Category(
        "acute_abdomen",
        "Severe or worsening abdominal pain, a rigid belly, or pain with fever, repeated vomiting or "
        "fainting needs emergency care now; do not eat or drink until you are seen.",
        alone=[
            r"\b(?:appendix|appendicitis) (?:\w+ )?(?:burst|ruptured|has burst|popped)\b",
            r"\b(?:vomit\w*|throw\w* up|threw up|puk\w*|being sick) (?:\w+ ){0,3}(?:poop|feces|faeces|poo|stool|"
            r"smells like poop|brown stuff)\b|\bpoop smelling\b",
        ],
        in_situation=[
            (r"\b(?:abdom\w*|stomach|belly|tummy|gut|guts|(?:lower )?(?:right|left) side|side|lower right|"
             r"right lower|rlq|pelvi\w*|appendix|appendicitis|navel|belly button|tum)\b",
             r"\b(?:severe\w*|excruciating|unbearable|agoni[sz]ing|agony|intense|extreme|terrible|horrible|"
             r"awful|worst|crippling|sharp|stabbing|killing|really bad|so bad|very bad|doubled over|doubling "
             r"over|cant (?:stand|move|walk|straighten|sit)|screaming|crying in pain|10 out of 10|rigid|hard "
             r"as a (?:board|rock)|board like|distended|swollen and (?:hard|tight)|green|bile|fever|burst|"
             r"ruptured|perforat\w*|appendicitis|rebound)\b"),
        ],
    ),
    Category(
        "testicular",
        "Sudden severe pain or swelling in a testicle is an emergency (testicular torsion can cost the "
        "testicle within hours): go to an emergency department now.",
        in_situation=[(
            r"\b(?:testic\w*|testes|testis|scrot\w*|groin|privates|private parts|(?:my|his|one|left|right|the|"
            r"boys|<KIN>s) (?:ball|balls|nut|nuts)|torsion)\b",
            r"\b(?:pain\w*|hurts?|hurting|ache|aching|agony|swollen|swelling|swell|twisted|twist|torsion|"
            r"killing|tender|higher|high up|riding high|throbbing|purple|bruised)\b",
        )],
    ),
    Category(
        "other",
        "After a serious fall, crash, burn or electric shock, call emergency services; do not move "
        "someone who may have a neck or back injury unless they are in danger. Cool a burn under "
        "running water for 20 minutes.",
        alone=[
            r"\b(?:should|do|shall|can|must) (?:i|we) (?:call|ring|phone|dial|get) (?:911|999|112|000|an "
            r"ambulance|the ambulance|emergency|for help|paramedics|someone)\b|\b(?:call|called|calling|ring|"
            r"rang|dial|dialled|dialed) (?:911|999|112|000|an ambulance|the ambulance|paramedics)\b|\bneed "
            r"(?:an |the )?ambulance\b|\bis (?:this|it) an emergency\b",
            r"\b(?:am|is) (?:i|he|she) (?:dying|going to die)\b|\b(?:i|he|she|im|hes|shes|they|theyre) (?:is |am "
            r"|are )?(?:dying|going to die)\b",
            r"\belectrocut\w*|\b(?:electric|electrical) shock\b|\bgot shocked\b|\bstruck by lightning\b|"
            r"\btouched (?:a |the )?(?:live|power|electric|high voltage) (?:wire|line|cable)\b",
            r"\bcant (?:\w+ )?(?:feel|move) (?:\w+ )?(?:legs|arms|body|feet|toes|anything)\b|\bbone (?:\w+ ){0,2}"
            r"(?:sticking|poking) out\b|\bhit by a (?:car|truck|bus|train|van|lorry)\b|\bfell (?:\w+ ){0,3}"
            r"(?:roof|ladder|balcony|cliff|building|scaffold\w*|storeys|floors|stories|window)\b",
            r"\b(?:on fire|set (?:him|her|my|them)sel(?:f|ves) (?:on fire|alight)|huge blisters|blisters all "
            r"over|(?:boiling|scalding|hot) (?:water|oil|soup|coffee|tea|fat) (?:\w+ ){0,4}(?:on|over|all over) "
            r"(?:him|her|them|me|my|his|their|himself|herself|myself))\b",
        ],
        in_situation=[
            r"\b(?:burn|burns|burnt|burned|scald\w*) (?:\w+ ){0,4}(?:face|chest|whole|all over|large|huge|big|"
            r"blister\w*|peeling|white|black|charred)\b",
            r"\b(?:car|motorcycle|motorbike|bike) (?:crash|accident|wreck)\b",
            r"\b(?:heat ?stroke|stopped sweating|not sweating|hypotherm\w*|frostbite)\b",
            (r"\b(?:sun|heat|heatwave|hot car|sauna|cold|freezing|snow)\b",
             r"\b(?:confus\w*|not sweating|stopped sweating|collaps\w*|faint\w*|unresponsive|delirious|seiz\w*|"
             r"slurr\w*|shivering)\b"),
        ],
    ),
)
