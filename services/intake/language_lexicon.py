"""A small lexicon of customer-service words per language, for the messages too short for
character n-grams alone ("hola", "merci", "senha?").

Written for this project (no external word list): greetings, thanks, yes/no, the words of
refunds, orders, delivery, passwords and accounts, and the function words that short messages
are made of, in en es fr de pt it, lower case and without accents (``fold`` strips them from
the message too, so "reembolsó" and "reembolso" are one word). A word listed under several
languages counts for each of them ("pedido": es and pt); words every language uses
("ok", "email", "app") are left out. Detection weighs a lexicon hit as
evidence beside py3langid's model (``services.intake.language``), never alone.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator

_WORDS: dict[str, str] = {
    "en": """
        hi hello hey thanks thank thx please pls yes no sure sorry help hiya howdy cheers
        good morning afternoon evening night bye goodbye
        my me i im i'm you your we our us is are was were be been do does did don't dont not can cant
        can't could would should will what where when why how who which the a an and or but with
        for from to of in on at this that it its it's have has had get got need want still yet
        refund refunds money back return returned returns charge charged charges payment paid pay
        invoice bill billing receipt order orders ordered delivery delivered deliver shipping shipped
        package parcel tracking track arrived arrive late lost missing damaged broken wrong item
        password reset login log account locked username forgot forgotten sign cancel
        cancelled canceled subscription change address phone number working work doesnt isnt
        problem issue question anyone there agent human someone speak talk urgent asap today
        yesterday week days never received waiting wait still update status card credit
        """,
    "es": """
        hola buenas buenos dias tardes noches gracias muchas porfa favor si vale claro perdon
        disculpe ayuda adios hasta luego saludos
        mi mis yo tu su sus nosotros es esta estan esto eso fue ser estoy tengo tiene tenemos
        necesito necesita quiero quisiera puedo puede pueden no hay donde cuando porque como
        que cual quien el la los las un una unos y o pero con sin para por del al en de ya todavia
        aun nada nadie algo
        reembolso reembolsar devolucion devolver dinero cobro cobraron cargo pago pague pagado
        factura recibo pedido pedidos compra envio entrega entregado llego llegado paquete
        seguimiento perdido roto danado equivocado producto tarde
        contrasena clave restablecer cuenta bloqueada usuario correo olvide iniciar sesion
        cancelar suscripcion cambiar direccion telefono numero funciona problema pregunta
        alguien agente persona hablar urgente hoy ayer semana recibido esperando tarjeta
        """,
    "fr": """
        bonjour bonsoir salut coucou merci beaucoup svp stp plait oui non daccord pardon desole
        desolee aide aidez revoir
        mon ma mes je j'ai moi vous votre vos nous notre est sont etait suis ai avez avons
        besoin veux voudrais peux pouvez ne pas plus rien personne ou quand pourquoi comment
        quoi quel quelle qui le la les un une des et mais avec sans pour par du au aux dans sur
        ce cette toujours encore deja
        remboursement rembourser remboursez retour argent prelevement paiement paye facture recu
        commande commandes achat livraison livre livree colis suivi arrive arrivee perdu casse
        endommage mauvais article produit retard
        mot passe reinitialiser compte bloque identifiant courriel oublie connexion connecter
        annuler abonnement changer adresse telephone numero marche fonctionne probleme question
        quelquun conseiller parler urgent aujourdhui hier semaine jamais attends attente carte
        """,
    "de": """
        hallo guten tag morgen abend servus moin danke dankeschon bitte ja nein nee
        entschuldigung sorry hilfe tschuss wiedersehen gruss
        mein meine meinen ich mir mich sie ihr ihre wir unser unsere ist sind war bin habe hat
        haben brauche mochte will kann konnen nicht kein keine nichts niemand wo wann warum wie
        was welche wer der die das den dem ein eine einen und oder aber mit ohne fur von zu im
        auf bei noch schon immer
        erstattung ruckerstattung zuruck geld ruckgabe abbuchung zahlung bezahlt rechnung beleg
        bestellung bestellt lieferung geliefert versand paket sendungsverfolgung angekommen
        verloren kaputt beschadigt falsch artikel produkt spat
        passwort kennwort zurucksetzen konto gesperrt benutzername vergessen anmelden einloggen
        kundigen stornieren abo abonnement andern adresse telefon nummer funktioniert problem
        frage jemand mitarbeiter sprechen dringend heute gestern woche nie erhalten warte karte
        """,
    "pt": """
        ola oi bom dia boa tarde noite obrigado obrigada valeu por favor sim nao claro desculpa
        desculpe ajuda tchau ate logo
        meu minha meus eu voce seu sua nos nosso e esta estao isso foi sou estou tenho tem temos
        preciso precisa quero queria posso pode podem onde quando porque como que qual quem
        o a os as um uma uns e ou mas com sem para pelo pela do da dos das no na em de ja ainda
        nada ninguem algo
        reembolso reembolsar devolucao devolver dinheiro cobranca cobrado pagamento paguei pago
        fatura nota recibo pedido pedidos compra envio entrega entregue chegou chegar pacote
        encomenda rastreio rastreamento perdido quebrado danificado errado produto atrasado
        senha redefinir recuperar conta bloqueada usuario esqueci entrar login
        cancelar assinatura mudar alterar endereco telefone numero funciona problema pergunta
        alguem atendente pessoa falar urgente hoje ontem semana nunca recebi recebido esperando
        cartao
        """,
    "it": """
        ciao buongiorno buonasera salve grazie mille prego per favore piacere si no va bene certo
        scusa scusi aiuto arrivederci
        mio mia miei io tu voi suo sua noi nostro e sono era ho hai ha abbiamo avete bisogno
        voglio vorrei posso puo possono non niente nessuno dove quando perche come cosa quale
        chi il lo la gli le un una uno ed o ma con senza per dal della del nel sul questo
        questa ancora gia sempre
        rimborso rimborsare reso restituire soldi addebito addebitato pagamento pagato fattura
        ricevuta ordine ordinato ordini acquisto spedizione consegna consegnato arrivato pacco
        tracciamento perso rotto danneggiato sbagliato articolo prodotto ritardo
        password reimpostare account conto bloccato utente dimenticato dimenticata accedere
        accesso annullare disdire abbonamento cambiare indirizzo telefono numero funziona
        problema domanda qualcuno operatore parlare urgente oggi ieri settimana mai ricevuto
        aspetto attesa carta
        """,
}

_TOKEN = re.compile(r"[a-z']+")


def fold(text: str) -> str:
    """Lower case, accents stripped ("Olá, não" → "ola, nao"), ß as ss: how the lexicon is written."""
    decomposed = unicodedata.normalize("NFKD", text.lower().replace("ß", "ss"))
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def words(text: str) -> list[str]:
    """The message's words, folded; apostrophes inside a word kept ("j'ai"), others dropped."""
    return [w.strip("'") for w in _TOKEN.findall(fold(text)) if w.strip("'")]


def _build() -> dict[str, frozenset[str]]:
    index: dict[str, set[str]] = {}
    for language, block in _WORDS.items():
        for word in block.split():
            index.setdefault(word, set()).add(language)
    return {word: frozenset(languages) for word, languages in index.items()}


LEXICON: dict[str, frozenset[str]] = _build()


def _deletions(word: str) -> Iterator[str]:
    for i in range(len(word)):
        yield word[:i] + word[i + 1 :]


def _build_near() -> dict[str, frozenset[str]]:
    """Every one-letter deletion of a lexicon word of 5+ letters → the languages of those words:
    how a typo ("reembolos", "pasword", "grcias") still finds its word."""
    near: dict[str, set[str]] = {}
    for word, languages in LEXICON.items():
        if len(word) >= 5:
            for deleted in _deletions(word):
                near.setdefault(deleted, set()).update(languages)
    return {key: frozenset(value) for key, value in near.items()}


_NEAR: dict[str, frozenset[str]] = _build_near()
LONGEST = max(map(len, LEXICON))


def lookup(word: str) -> tuple[frozenset[str], bool]:
    """The languages the word belongs to and whether the match is exact. A word of 5+ letters
    not listed is matched within one edit (a letter missing, extra, swapped for another or
    transposed with its neighbour); empty when nothing matches."""
    exact = LEXICON.get(word)
    if exact is not None:
        return exact, True
    if len(word) < 5 or len(word) > LONGEST + 1:
        # Longer than any lexicon word with a letter added: nothing within one edit, and the
        # deletions of a 100,000-letter "word" (an email can hold one) cost its length squared.
        return frozenset(), False
    found: set[str] = set()
    # A letter missing from the word: the word is a deletion of a lexicon word.
    found.update(_NEAR.get(word, ()))
    for deleted in _deletions(word):
        # An extra letter: a deletion of the word is a lexicon word.
        found.update(LEXICON.get(deleted, ()))
        # A letter swapped (or two neighbours transposed): the two share a deletion.
        found.update(_NEAR.get(deleted, ()))
    return frozenset(found), False
