"""Localized labels, separators, quote verbs and subject prefixes of forwarded mail, as data."""

# ruff: noqa: RUF001  (the labels are written in the scripts that mail clients use)

from __future__ import annotations


def _words(*groups: str) -> tuple[str, ...]:
    """The "|"-separated words of groups, casefolded as the text they are matched with."""
    return tuple(word.casefold() for group in groups for word in group.split("|"))


# Header labels of a forwarded block by field, as mail clients write them (Gmail, Outlook,
# Apple Mail, Thunderbird, Yahoo, HubSpot, Lotus Notes ...), lowercase, "|" between labels.
# "other" labels belong to a block but carry nothing kept.
_LABELS_BY_FIELD = {
    "from": _words(
        "from|de|von|van|da|från|fra|frå|od|от|від|kimden|feladó|lähettäjä|saatja|šalje",
        "mittente|de la|送信元|差出人|发件人|寄件者|寄件人|보낸 사람|보낸사람|afzender",
        "avsändare|avsender|afsender|nadawca|odesílatel|odosielateľ|pošiljatelj|pošiljalac",
        "expéditeur|remitente|remetente|absender|gönderen|отправитель|від кого|відправник",
        "siuntėjas|sūtītājs|αποστολέας|από|מאת|من|المرسل|dari|từ|người gửi|จาก|frá|nuo|no",
    ),
    "to": _words(
        "to|à|a|an|aan|para|til|till|do|komu|кому|kime|címzett|vastaanottaja|saaja|prima",
        "către|catre|送信先|宛先|收件人|收件者|받는 사람|받는사람|destinataire|destinataires",
        "destinatario|destinatarios|destinatário|empfänger|adresat|alıcı|получатель",
        "одержувач|kam|προς|אל|إلى|kepada|đến|tới|ถึง|za|adressaat|per a|до",
    ),
    "cc": _words(
        "cc|cc.|kopie|kopia|kopi|копия|копія|bilgi|másolat|másolatot kap|dw|dw.|kopio",
        "koopia|kópia|抄送|抄送人|副本|참조|kopija|κοιν|κοιν.|עותק|نسخة|tembusan",
    ),
    "bcc": _words(
        "bcc|cci|cco|ccn|blindkopie|bkopi|ukryta kopia|skrytá kopie|скрытая копия",
        "прихована копія|gizli|titkos másolat|piilokopio|dold kopia|blind kopi|密送",
        "密件副本|숨은 참조",
    ),
    "subject": _words(
        "subject|objet|betreff|onderwerp|oggetto|asunto|assunto|emne|ämne|temat|předmět",
        "predmet|тема|konu|tárgy|aihe|teema|naslov|subiect|件名|主题|主旨|제목|sujet|θέμα",
        "נושא|الموضوع|perihal|subjek|chủ đề|tiêu đề|หัวเรื่อง|efni|zadeva|tēma|assumpte",
        "относно",
    ),
    "date": _words(
        "date|datum|data|fecha|dato|dátum|дата|tarih|päivämäärä|päiväys|kuupäev|dată|日付",
        "日期|날짜|sent|gesendet|envoyé|envoyé le|enviado|enviada|inviato|verzonden|skickat",
        "sendt|wysłano|wysłane|odesláno|odoslané|отправлено|відправлено|надіслано",
        "gönderilen|gönderildi|gönderme tarihi|elküldve|küldve|lähetetty|saadetud|poslano",
        "trimis|送信日時|发送时间|發送時間|傳送時間|時間|보낸 날짜|보낸날짜|ημερομηνία",
        "στάλθηκε|תאריך|נשלח|التاريخ|أرسل|tanggal|dikirim|ngày|đã gửi|วันที่|dagsetning",
        "enviado el|enviado em|enviada em|enviat el|寄件日期|تم الإرسال|išsiųsta|nosūtīts",
        "terkirim|изпратено|poslato",
    ),
    "other": _words(
        "reply-to|reply to|antwort an|répondre à|responder a|rispondi a|beantwoorden aan",
        "svara till|odpowiedz do|importance|wichtigkeit|priorité|importancia|priority",
        "attachments|anlagen|pièces jointes|datos adjuntos|allegati|bijlagen|bilagor",
        "załączniki|sent by|gesendet von|envoyé par|on behalf of|organization|organisation",
        "sender|user-agent|x-mailer|message-id|mime-version|content-type|in-reply-to",
        "references|return-path|x-original-to|delivered-to",
    ),
}
LABELS = {label: field for field, labels in _LABELS_BY_FIELD.items() for label in labels}
LONGEST_LABEL = max(len(label) for label in LABELS)

# Separator lines without their dashes and colon: "---------- Forwarded message ---------",
# "Begin forwarded message:". "forward" says forwarded; "original" is what Outlook and
# webmails write above forwarded and replied-to messages alike.
_SEPARATORS_BY_KIND = {
    "forward": _words(
        "forwarded message|begin forwarded message|begin forwarded text|forwarded email",
        "forwarded e-mail|forwarded mail|start of forwarded message",
        "weitergeleitete nachricht|anfang der weitergeleiteten nachricht",
        "weitergeleitete e-mail|anfang der weitergeleiteten e-mail|message transféré",
        "message transmis|message réexpédié",
        "début du message réexpédié|début du message transféré|courriel transféré",
        "mensaje reenviado|comienzo del mensaje reenviado|inicio del mensaje reenviado",
        "correo reenviado|messaggio inoltrato|inizio messaggio inoltrato",
        "doorgestuurd bericht|begin doorgestuurd bericht|doorgestuurde bericht",
        "mensagem encaminhada|mensagem reencaminhada|início da mensagem encaminhada",
        "início da mensagem reencaminhada|e-mail encaminhado|vidarebefordrat meddelande",
        "vidarebefordrat brev|början av vidarebefordrat meddelande|videresendt melding",
        "videresendt e-post|start på videresendt melding|videresendt meddelelse",
        "videresendt besked|start på videresendt besked|przekazana wiadomość",
        "wiadomość przesłana dalej|przesłana wiadomość|początek przekazywanej wiadomości",
        "přeposlaná zpráva|začátek přeposílané zprávy|preposlaná správa",
        "začiatok preposlanej správy|továbbított üzenet|továbbított levél kezdete",
        "továbbított levél|пересылаемое сообщение|перенаправленное сообщение",
        "пересланное сообщение|начало переадресованного сообщения|переслане повідомлення",
        "перенаправлене повідомлення|mesaj redirecționat|mesaj redirectionat|mesaj transmis",
        "începutul mesajului redirecționat|iletilmiş mesaj|ileti başlangıcı|iletilen ileti",
        "iletilen mesaj|yönlendirilmiş ileti|proslijeđena poruka|prosljeđena poruka",
        "početak proslijeđene poruke|välitetty viesti|välitetty viesti alkaa",
        "edelleenlähetetty viesti|edastatud kiri|edasisaadetud kiri|edastatud sõnum",
        "persiųstas laiškas|pārsūtīta ziņa|posredovano sporočilo|препратено съобщение",
        "прослеђена порука|προωθημένο μήνυμα|メッセージを転送|転送されたメッセージ",
        "転送メッセージ|转发的邮件|已转发邮件|转发邮件|轉寄的郵件|轉寄郵件|已轉寄郵件",
        "전달된 메시지|전달 메시지|전달된 메일|转发的消息|轉寄的訊息|以下为转发的邮件",
        "開始轉寄郵件|vidarebefordrat mejl|videresendt mail",
    ),
    "original": _words(
        "original message|ursprüngliche nachricht|original-nachricht|originalnachricht",
        "邮件原件|message d'origine|message original",
        "mensaje original|messaggio originale|oorspronkelijk bericht|origineel bericht",
        "mensagem original|ursprungligt meddelande|opprinnelig melding|oprindelig meddelelse",
        "oryginalna wiadomość|wiadomość oryginalna|původní zpráva|pôvodná správa",
        "eredeti üzenet|исходное сообщение|оригинальное сообщение|вихідне повідомлення",
        "оригінальне повідомлення|mesaj original|orijinal mesaj|özgün ileti|izvorna poruka",
        "originalna poruka|alkuperäinen viesti|algne kiri|originalno sporočilo",
        "αρχικό μήνυμα|元のメッセージ|原始邮件|原始郵件|원본 메시지",
    ),
}
SEPARATORS = {phrase: kind for kind, phrases in _SEPARATORS_BY_KIND.items() for phrase in phrases}

# Lotus Notes: "----- Forwarded by Jane Roe/Sales/Acme on 05/10/2001 09:12 AM -----" names
# the forwarder, never the original sender.
FORWARDED_BY = _words(
    "forwarded by|weitergeleitet von|transféré par|reenviado por|inoltrato da",
    "doorgestuurd door|encaminhado por|vidarebefordrat av|videresendt af|videresendt av",
    "przekazane przez|továbbította|переслано",
)

# The verb of a reply's attribution line: "On <date>, <name> <address> wrote:".
WROTE_WORDS = _words(
    "wrote|writes|schrieb|a écrit|escribió|ha scritto|schreef|escreveu|skrev|napisał",
    "napisała|написал|написала|написав|kirjoitti|írta|yazdı|napísal|napsal|napsala",
    "a scris|je napisao|je napisala|je napisal|kirjutas|rašė|rakstīja|έγραψε|כתב|كتب",
    "menulis|đã viết|skrifaði|пише|написа|va escriure|写道|寫道|님이 작성|書きました",
    "のメッセージ",
)

# Subject prefixes of a forward ("Fwd:", "WG:", "TR:", "RV:", "I:", "PD:", "VS:") and of a
# reply. "VS" forwards in Danish and Norwegian but replies in Finnish: taken for a forward.
FORWARD_PREFIXES = frozenset(
    _words(
        "fw|fwd|wg|tr|rv|i|inoltro|pd|enc|reenc|vs|vb|vl|vid|videresend|doorst|tov",
        "továbbítás|továbbítva|redir|ilt|prosl|пересл|переслано|fs|转发|轉寄|轉送|転送|전달",
        "př|πρθ|הועבר|pārs",
    )
)
REPLY_PREFIXES = frozenset(
    _words(
        "re|aw|sv|antw|odp|res|r|ris|ynt|vá|válasz|odg|отв|ответ|відп|回复|答复|回覆|返信",
        "답장|회신|atb|vast|απ|השב",
    )
)
