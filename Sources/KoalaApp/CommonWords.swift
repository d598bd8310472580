/// Everyday English words. An identifier token should be a word the text encoders
/// have no strong meaning for ("sks"); training a common word onto a subject fights
/// what the model already knows and bleeds into every prompt that uses the word.
public enum CommonWords {
    public static func contains(_ word: String) -> Bool { set.contains(word.lowercased()) }

    private static let set: Set<String> = Set("""
    a about above after again against all also always am an and another any are around as at away \
    back bad be because been before being below best better between big both but by can cannot \
    come could day did do does doing done down during each early end even ever every few find first \
    for from full get give go good got great had has have having he her here hers him his how i if in \
    into is it its just keep know last least left less let like little long look made make man many \
    may me might more most much must my never new next no none nor not now of off often old on once \
    one only or other our out over own part people place put right same say see she should show \
    since small so some still such take than that the their them then there these they thing think \
    this those through time to too two under up upon us use very want was way we well went were what \
    when where which while who whom why will with without work would year yes yet you young your \
    zero three four five six seven eight nine ten hundred thousand \
    red orange yellow green blue purple pink brown black white gray grey gold silver dark light \
    happy sad cute pretty beautiful ugly fast slow hot cold warm cool soft hard high low \
    large tiny huge short tall wide open close real true false free sure \
    dog dogs cat cats puppy kitten pet animal bird fish horse cow pig sheep goat rabbit mouse bear \
    lion tiger wolf fox duck chicken person woman women men boy girl child baby kid face head hand \
    eye eyes hair body friend family mother father mom dad brother sister wife husband king queen \
    car bike bicycle bus train plane boat ship truck house home room door window table chair bed \
    sofa desk lamp cup mug glass bottle plate bowl book pen paper phone computer toy ball bag hat \
    shoe shoes shirt dress coat watch ring clock box tree flower flowers plant grass garden forest \
    mountain river lake sea ocean beach sky sun moon star stars rain snow water fire stone rock \
    city street road town world country land food bread apple cake coffee tea milk wine \
    photo picture image art painting style portrait drawing sketch statue model toy \
    love life death war peace music song game sport money night morning evening today week \
    month name word words story idea point fact case group problem number side
    """.split(whereSeparator: { $0 == " " || $0 == "\n" }).map(String.init))
}
