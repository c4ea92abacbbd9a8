"""Parse, signatures: the words that mark a closing, a job title and a company, by language."""

from __future__ import annotations

# Closings before a signature, lowercased, as regular-expression alternatives.
CLOSINGS = (
    "regards|best regards|kind regards|warm regards|warmest regards|with regards|best wishes",
    "all the best|best|cheers|thanks|thank you|many thanks|thanks again|thanks and regards",
    "thanks & regards|thx|sincerely|sincerely yours|yours sincerely|yours truly|respectfully",
    "yours faithfully|take care|talk soon|rgds|br|kr|mit freundlichen grüßen",
    "mit freundlichen grüssen|freundliche grüße|freundliche grüsse|viele grüße|viele grüsse",
    "beste grüße|beste grüsse|liebe grüße|herzliche grüße|schöne grüße|grüße|grüsse|gruß",
    "gruss|mfg|vg|lg|cordialement|bien cordialement|bien à vous|salutations|merci",
    "meilleures salutations|sincères salutations|amicalement|bonne journée|saludos",
    "un saludo|saludos cordiales|atentamente|cordialmente|gracias|un abrazo",
    "cordiali saluti|distinti saluti|saluti|grazie|a presto|buona giornata",
    "met vriendelijke groet|met vriendelijke groeten|vriendelijke groet|groeten|groet|mvg",
    "atenciosamente|cumprimentos|abraços|abraço|obrigado|obrigada|att",
    "med vänlig hälsning|vänliga hälsningar|hälsningar|mvh|med venlig hilsen|venlig hilsen",
    "vennlig hilsen|med vennlig hilsen|hilsen|ystävällisin terveisin|terveisin|pozdrawiam",
    "z poważaniem|pozdrowienia|s pozdravem|с уважением|спасибо|всего доброго",  # noqa: RUF001
    "с наилучшими пожеланиями|saygılarımla|iyi çalışmalar|üdvözlettel",  # noqa: RUF001
    "tisztelettel",
    "cu stimă|cu respect|よろしくお願いします|よろしくお願いいたします|敬具|此致|祝好|谢谢",
)

# Words that make a capitalized line an organisation when it has no legal suffix.
ORGANISATION = (
    r"\b(?:university|universität|université|universidad|college|school|institute|center"
    r"|centre|bank|energy|capital|partners|associates|consulting|services|solutions|systems"
    r"|technologies|software|labs|agency|foundation|council|commission|department|ministry)\b"
)

# Job titles, as a regular expression.
TITLE = (
    r"\b(?:manager|director|president|vice president|vp|svp|evp|avp|ceo|cto|cfo|coo|cio|cmo"
    r"|chief|head of|lead|engineer|analyst|counsel|attorney|lawyer|consultant|specialist"
    r"|coordinator|assistant|associate|officer|founder|co-founder|partner|owner|executive"
    r"|representative|administrator|developer|designer|architect|scientist|trader|economist"
    r"|advis[eo]r|accountant|controller|treasurer|secretary|chairman|chairwoman|principal"
    r"|supervisor|recruiter|professor|researcher|editor|producer|geschäftsführer|leiter|leiterin"
    r"|berater|beraterin|vertrieb|directeur|directrice|responsable|chargée?|ingénieur|gérant"
    r"|gerente|jefe|ingeniero|direttore|amministratore|diretor|directora)\b"
)

# Legal forms that end a company name, as a regular expression.
COMPANY = (
    r"(?:^|[\s,])(?:inc|incorporated|corp|corporation|co|company|llc|l\.l\.c|ltd|limited|plc"
    r"|llp|gmbh|ag|kg|se|s\.a|sa|s\.a\.s|sas|sarl|s\.l|s\.p\.a|spa|s\.r\.l|srl|b\.v|bv|n\.v|nv"
    r"|oy|ab|a/s|aps|pty|k\.k|group|holdings?|& co)\.?(?=$|[\s,)])"
)
