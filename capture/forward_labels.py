"""Localized labels, separators, quote verbs and subject prefixes of forwarded mail, as data."""

from __future__ import annotations

# Header labels of a forwarded block, by field, as mail clients write them (Gmail, Outlook,
# Apple Mail, Thunderbird, Yahoo, HubSpot, Lotus Notes ...). Matched case-insensitively with
# whitespace collapsed; "other" labels belong to the block but carry nothing we keep.
_LABELS_BY_FIELD: dict[str, tuple[str, ...]] = {
    "from": (
        "from", "de", "von", "van", "da", "från", "fra", "frå", "od", "от", "від", "kimden",
        "feladó", "lähettäjä", "saatja", "šalje", "mittente", "de la", "送信元", "差出人",
        "发件人", "寄件者", "寄件人", "보낸 사람", "보낸사람", "afzender", "avsändare",
        "avsender", "afsender", "nadawca", "odesílatel", "odosielateľ", "pošiljatelj",
        "pošiljalac", "pošiljatelj", "expéditeur", "remitente", "remetente", "absender",
        "gönderen", "отправитель", "від кого", "відправник", "siuntėjas", "sūtītājs",
        "αποστολέας", "από", "מאת", "من", "المرسل", "dari", "từ", "người gửi", "จาก", "frá",
    ),
    "to": (
        "to", "à", "a", "an", "aan", "para", "til", "till", "do", "komu", "кому", "kime",
        "címzett", "vastaanottaja", "saaja", "prima", "către", "catre", "送信先", "宛先",
        "收件人", "收件者", "받는 사람", "받는사람", "destinataire", "destinataires",
        "destinatario", "destinatarios", "destinatário", "empfänger", "adresat", "alıcı",
        "получатель", "одержувач", "kam", "προς", "אל", "إلى", "kepada", "đến", "tới", "ถึง",
    ),
    "cc": (
        "cc", "cc.", "kopie", "kopia", "kopi", "копия", "копія", "bilgi", "másolat",
        "másolatot kap", "dw", "dw.", "kopio", "koopia", "kópia", "抄送", "抄送人", "副本",
        "참조", "kopija", "κοιν", "κοιν.", "עותק", "نسخة", "tembusan", "cc to",
    ),
    "bcc": (
        "bcc", "cci", "cco", "ccn", "blindkopie", "bkopi", "ukryta kopia", "skrytá kopie",
        "скрытая копия", "прихована копія", "gizli", "titkos másolat", "piilokopio",
        "dold kopia", "blind kopi", "密送", "密件副本", "숨은 참조",
    ),
    "subject": (
        "subject", "objet", "betreff", "onderwerp", "oggetto", "asunto", "assunto", "emne",
        "ämne", "temat", "předmět", "predmet", "тема", "konu", "tárgy", "aihe", "teema",
        "naslov", "subiect", "件名", "主题", "主旨", "제목", "sujet", "θέμα", "נושא",
        "الموضوع", "perihal", "subjek", "chủ đề", "tiêu đề", "หัวเรื่อง", "efni", "zadeva",
    ),
    "date": (
        "date", "datum", "data", "fecha", "dato", "dátum", "дата", "tarih", "päivämäärä",
        "päiväys", "kuupäev", "dată", "日付", "日期", "날짜", "sent", "gesendet", "envoyé",
        "envoyé le", "enviado", "enviada", "inviato", "verzonden", "skickat", "sendt",
        "wysłano", "wysłane", "odesláno", "odoslané", "отправлено", "відправлено",
        "надіслано", "gönderilen", "gönderildi", "gönderme tarihi", "elküldve", "küldve",
        "lähetetty", "saadetud", "poslano", "trimis", "送信日時", "发送时间", "發送時間",
        "傳送時間", "時間", "보낸 날짜", "보낸날짜", "ημερομηνία", "στάλθηκε", "תאריך",
        "נשלח", "التاريخ", "أرسل", "tanggal", "dikirim", "ngày", "đã gửi", "วันที่",
        "dagsetning", "sendt dato",
    ),
    "other": (
        "reply-to", "reply to", "antwort an", "répondre à", "responder a", "rispondi a",
        "beantwoorden aan", "svara till", "odpowiedz do", "importance", "wichtigkeit",
        "priorité", "importancia", "priority", "attachments", "anlagen", "pièces jointes",
        "datos adjuntos", "allegati", "bijlagen", "bilagor", "załączniki", "sent by",
        "gesendet von", "envoyé par", "on behalf of", "organization", "organisation",
    ),
}

LABELS: dict[str, str] = {
    label: field for field, labels in _LABELS_BY_FIELD.items() for label in labels
}
LONGEST_LABEL = max(len(label) for label in LABELS)

# Separator lines ("---------- Forwarded message ---------", "Begin forwarded message:"),
# without their dashes and colon. "forward" says the mail was forwarded; "original" is what
# Outlook and webmails write above both forwarded and replied-to messages.
_SEPARATORS_BY_KIND: dict[str, tuple[str, ...]] = {
    "forward": (
        "forwarded message", "begin forwarded message", "forwarded email", "forwarded e-mail",
        "forwarded mail", "weitergeleitete nachricht", "anfang der weitergeleiteten nachricht",
        "weitergeleitete e-mail", "message transféré", "message transmis",
        "début du message réexpédié", "début du message transféré", "message réexpédié",
        "courriel transféré", "mensaje reenviado", "comienzo del mensaje reenviado",
        "inicio del mensaje reenviado", "correo reenviado", "messaggio inoltrato",
        "inizio messaggio inoltrato", "doorgestuurd bericht", "begin doorgestuurd bericht",
        "doorgestuurde bericht", "mensagem encaminhada", "mensagem reencaminhada",
        "início da mensagem encaminhada", "início da mensagem reencaminhada",
        "e-mail encaminhado", "vidarebefordrat meddelande", "vidarebefordrat brev",
        "början av vidarebefordrat meddelande", "videresendt melding", "videresendt e-post",
        "start på videresendt melding", "videresendt meddelelse", "videresendt besked",
        "start på videresendt besked", "przekazana wiadomość", "wiadomość przesłana dalej",
        "przesłana wiadomość", "początek przekazywanej wiadomości", "přeposlaná zpráva",
        "začátek přeposílané zprávy", "preposlaná správa", "začiatok preposlanej správy",
        "továbbított üzenet", "továbbított levél kezdete", "továbbított levél",
        "пересылаемое сообщение", "перенаправленное сообщение", "пересланное сообщение",
        "начало переадресованного сообщения", "переслане повідомлення",
        "перенаправлене повідомлення", "mesaj redirecționat", "mesaj redirectionat",
        "mesaj transmis", "începutul mesajului redirecționat", "iletilmiş mesaj",
        "ileti başlangıcı", "iletilen ileti", "iletilen mesaj", "yönlendirilmiş ileti",
        "proslijeđena poruka", "prosljeđena poruka", "početak proslijeđene poruke",
        "välitetty viesti", "välitetty viesti alkaa", "edelleenlähetetty viesti",
        "edastatud kiri", "edasisaadetud kiri", "edastatud sõnum", "persiųstas laiškas",
        "pārsūtīta ziņa", "posredovano sporočilo", "препратено съобщение",
        "прослеђена порука", "προωθημένο μήνυμα", "メッセージを転送", "転送されたメッセージ",
        "転送メッセージ", "转发的邮件", "已转发邮件", "转发邮件", "轉寄的郵件", "轉寄郵件",
        "已轉寄郵件", "전달된 메시지", "전달 메시지",
    ),
    "original": (
        "original message", "ursprüngliche nachricht", "message d'origine", "message original",
        "mensaje original", "messaggio originale", "oorspronkelijk bericht",
        "origineel bericht", "mensagem original", "ursprungligt meddelande",
        "opprinnelig melding", "oprindelig meddelelse", "oryginalna wiadomość",
        "wiadomość oryginalna", "původní zpráva", "pôvodná správa", "eredeti üzenet",
        "исходное сообщение", "оригинальное сообщение", "вихідне повідомлення",
        "оригінальне повідомлення", "mesaj original", "orijinal mesaj", "özgün ileti",
        "izvorna poruka", "originalna poruka", "alkuperäinen viesti", "algne kiri",
        "originalno sporočilo", "αρχικό μήνυμα", "元のメッセージ", "原始邮件", "原始郵件",
        "원본 메시지",
    ),
}

SEPARATORS: dict[str, str] = {
    phrase: kind for kind, phrases in _SEPARATORS_BY_KIND.items() for phrase in phrases
}

# Lotus Notes and similar: "----- Forwarded by Jane Roe/Sales/Acme on 05/10/2001 09:12 -----".
# The name after these words is the forwarder, never the original sender.
FORWARDED_BY = (
    "forwarded by", "weitergeleitet von", "transféré par", "reenviado por", "inoltrato da",
    "doorgestuurd door", "encaminhado por", "vidarebefordrat av", "videresendt af",
    "videresendt av", "przekazane przez", "továbbította", "переслано",
)

# The verb of a reply's attribution line: "On <date>, <name> <address> wrote:".
WROTE_WORDS = (
    "wrote", "writes", "schrieb", "a écrit", "escribió", "ha scritto", "schreef",
    "escreveu", "skrev", "napisał", "napisała", "написал", "написала", "написав",
    "написала", "kirjoitti", "írta", "yazdı", "napísal", "napsal", "napsala", "a scris",
    "je napisao", "je napisala", "kirjutas", "rašė", "rakstīja", "je napisal", "έγραψε",
    "כתב", "كتب", "menulis", "đã viết", "skrifaði", "写道", "寫道", "님이 작성", "작성:",
    "書きました", "のメッセージ",
)

# Subject prefixes: a forward ("Fwd:", "WG:", "TR:", "RV:", "I:", "PD:", "VS:") or a reply.
# "VS" is a Danish/Norwegian forward but a Finnish reply: it is taken for a forward.
FORWARD_PREFIXES = frozenset(
    (
        "fw", "fwd", "wg", "tr", "rv", "i", "inoltro", "pd", "enc", "reenc", "vs", "vb", "vl",
        "vid", "videresend", "doorst", "tov", "továbbítás", "továbbítva", "redir", "ilt",
        "i̇lt", "prosl", "пересл", "переслано", "fs", "转发", "轉寄", "轉送", "転送", "전달",
    )
)
REPLY_PREFIXES = frozenset(
    (
        "re", "aw", "sv", "antw", "odp", "res", "r", "ris", "ynt", "vá", "válasz", "odg",
        "отв", "ответ", "відп", "回复", "答复", "回覆", "返信", "답장", "회신", "atb", "vast",
    )
)
