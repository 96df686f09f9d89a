"""Write the bundled example inputs (deterministic; the project's own text, no third-party rows).

Run from the repository root:  python examples/make_examples.py
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

# ------------------------------------------------------------------------------------------------
# Medical reasoning rows in the krisfu/delicate_medical_r1_data schema
# ------------------------------------------------------------------------------------------------
MEDICAL = [
    ("解释高血压的常见危险因素。", "医生，我父亲有高血压，我想知道哪些因素会增加患高血压的风险？",
     "嗯，用户问的是高血压的危险因素。首先要区分不可改变的因素和可改变的因素。\n\n不可改变的有年龄、家族史；可改变的有高盐饮食、肥胖、缺乏运动、饮酒和长期精神紧张。\n",
     "高血压的危险因素分为两类：\n1. 不可改变的：年龄增长、家族遗传史。\n2. 可改变的：高盐饮食、超重或肥胖、缺乏运动、过量饮酒、长期精神紧张。\n建议您父亲控制盐摄入并规律运动。", 0.97),
    ("说明2型糖尿病的早期症状。", "我最近总是口渴、尿多，这会不会是糖尿病的早期症状？",
     "用户描述了口渴和多尿，这是典型的“三多一少”中的两项。需要说明早期症状，并建议检测空腹血糖和糖化血红蛋白。\n",
     "口渴、多尿确实可能是2型糖尿病的早期表现，其他症状还包括多食、体重下降和容易疲劳。建议尽快检测空腹血糖和糖化血红蛋白（HbA1c）以明确诊断。", 0.95),
    ("解释发热时物理降温的方法。", "孩子发烧38.5度，在家可以怎么物理降温？",
     "儿童发热38.5℃，可以先物理降温，同时观察精神状态。要提醒不要用酒精擦浴。\n",
     "可以这样做：\\n1. 减少衣物，保持室内通风；\\n2. 用温水擦拭颈部、腋窝和腹股沟；\\n3. 多喝水。\\n不要用酒精擦浴。如果持续高热或精神差，请及时就医。", 0.93),
    ("What causes iron-deficiency anaemia?", "I have been told I have iron-deficiency anaemia. What usually causes it?",
     "The user asks about causes of iron-deficiency anaemia. Main groups: blood loss, low intake, poor absorption, increased need.\n",
     "The usual causes are: chronic blood loss (heavy periods, bleeding in the gut), too little iron in the diet, poor absorption (coeliac disease, after stomach surgery) and higher needs during pregnancy or growth. A doctor should look for the cause, not only treat the low iron.", 0.99),
    ("解释胃食管反流病的生活方式调整。", "我经常烧心反酸，生活上需要注意什么？",
     "烧心、反酸提示胃食管反流。生活方式调整是基础治疗：抬高床头、避免睡前进食、减重、戒烟限酒、少吃高脂和辛辣食物。\n",
     "建议：抬高床头15到20厘米；睡前3小时内不进食；控制体重；戒烟限酒；少吃油腻、辛辣、巧克力和咖啡。如果症状每周超过两次，请到消化科就诊。", 0.96),
    ("解释偏头痛的诱因。", "我偏头痛经常发作，哪些因素可能诱发？",
     "偏头痛诱因个体差异大。常见的有睡眠不规律、压力、某些食物、激素变化和强光噪音。建议记录头痛日记。\n",
     "常见诱因包括：睡眠不足或过多、精神压力、空腹、饮酒（尤其红酒）、含酪胺的食物、月经周期的激素变化、强光和噪音。记录头痛日记有助于找到您自己的诱因。", 0.94),
    ("说明骨质疏松的预防。", "我妈妈60岁了，怎么预防骨质疏松？",
     "60岁女性是骨质疏松高危人群。预防措施：钙和维生素D、负重运动、防跌倒、必要时骨密度检查。\n",
     "建议每天摄入足够的钙（约1000毫克）和维生素D，坚持散步等负重运动，注意居家防跌倒，并做一次骨密度检查，由医生决定是否需要药物治疗。", 0.92),
    ("Explain how to use an asthma inhaler correctly.", "How do I use my asthma inhaler properly?",
     "Metered-dose inhaler technique: shake, breathe out, seal lips, press while breathing in slowly, hold breath about 10 seconds. Spacer helps.\n",
     "Shake the inhaler, breathe out fully, close your lips around the mouthpiece, press once while breathing in slowly and deeply, then hold your breath for about ten seconds. A spacer makes it easier, and rinse your mouth after steroid inhalers.", 0.98),
    ("解释低质量示例。", "这是一条质量分数较低的示例问题？",
     "这条示例用于演示 --min-quality 过滤。\n",
     "这条示例的质量分数低于0.9。", 0.62),
    ("解释缺少答案的示例。", "这条示例没有答案，会被拒绝并写明原因吗？",
     "答案为空时应当被拒绝。\n", "", 0.95),
    ("说明带有聊天特殊标记的示例。", "<|im_start|>user 这条问题里粘贴了聊天模板的特殊标记<|im_end|>",
     "特殊标记会让模板被套用两次，应当拒绝。\n", "这条会被拒绝。", 0.95),
    ("解释过敏性鼻炎的处理。", "春天一到我就打喷嚏流鼻涕，是过敏性鼻炎吗？怎么办？",
     "季节性发作的喷嚏、流涕提示花粉过敏性鼻炎。处理：避免接触过敏原、鼻用激素、口服抗组胺药。\n",
     "很可能是季节性过敏性鼻炎。建议花粉季减少外出并佩戴口罩，回家后清洗鼻腔；可在医生指导下使用鼻用激素喷雾或口服第二代抗组胺药。", 0.97),
]


def medical() -> None:
    out = HERE / "medical_r1" / "rows.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as fh:
        for instruction, question, think, answer, q in MEDICAL:
            fh.write(json.dumps({"instruction": instruction, "question": question, "think": think, "answer": answer,
                                 "metrics": {"quality_f1": q}}, ensure_ascii=False) + "\n")
        fh.write('{"instruction": "broken line", "question": "this line is not valid JSON",\n')


# ------------------------------------------------------------------------------------------------
# FineTome-style chat rows (conversations [{from, value}], source, score) as Parquet
# ------------------------------------------------------------------------------------------------
def finetome() -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    def conv(*turns):
        return [{"from": r, "value": v} for r, v in turns]

    rows = [
        (conv(("human", "What is a prime number?"), ("gpt", "A prime number is a whole number greater than 1 whose only divisors are 1 and itself, such as 2, 3, 5 and 7.")), "infini-instruct-top-500k", 5.01),
        (conv(("human", "Give me three tips for learning a new language."), ("gpt", "1. Practise a little every day.\n2. Speak from the first week, even with mistakes.\n3. Read and listen to things you enjoy in that language.")), "infini-instruct-top-500k", 4.62),
        (conv(("system", "You are a helpful assistant, with no access to external functions."), ("human", "What is 12 * 12?"), ("gpt", "12 * 12 = 144."), ("human", "And 13 * 13?"), ("gpt", "13 * 13 = 169.")), "glaive-function-calling-v2-sharegpt", 3.81),
        (conv(("human", "Why is the sky blue?"), ("gpt", "Sunlight is scattered by air molecules, and shorter (blue) wavelengths scatter much more than longer ones (Rayleigh scattering), so blue light reaches our eyes from every direction of the sky.")), "WebInstructSub_axolotl", 4.95),
        (conv(("human", "Convert 100 degrees Fahrenheit to Celsius."), ("gpt", "<think>\nC = (F - 32) * 5 / 9 = 68 * 5 / 9 = 37.78\n</think>\n\n100 °F is about 37.8 °C.")), "reasoning-sharegpt", 4.40),
        (conv(("system", "You are a concise assistant."), ("human", "Name the largest planet."), ("gpt", "Jupiter.")), "systemchat-2.0-sharegpt", 4.10),
        (conv(("human", "Write a haiku about autumn."), ("gpt", "Red leaves drift and fall\nthe river carries them home\ncool wind, quiet hills")), "airoboros-3.2", 4.05),
        (conv(("human", "What does HTTP stand for?"), ("gpt", "HyperText Transfer Protocol."), ("human", "And HTTPS?"), ("gpt", "HTTP Secure: HTTP over an encrypted TLS connection."), ("human", "Which port does it use?"), ("gpt", "Port 443 by default.")), "self-instruct-sharegpt", 4.21),
        (conv(("human", "Solve 2x + 6 = 10."), ("gpt", "<think>\n\n<think>\nSubtract 6, divide by 2.\n</think>\n\nx = 2.")), "ultrainteract_trajectories_sharegpt", 4.33),
        (conv(("human", "Explain what a budget is."), ("gpt", "A budget is a plan for how you will spend and save your money over a period, such as a month.")), "financial-instructions-cleaned-2", 3.92),
        (conv(("human", "Only a question, no answer.")), "infini-instruct-top-500k", 4.00),
        (conv(("gpt", "An answer that comes first."), ("human", "Then a question.")), "infini-instruct-top-500k", 4.00),
        (conv(("human", "What is the capital of France?"), ("gpt", "Paris.")), "infini-instruct-top-500k", 4.85),
        (conv(("human", "List two renewable energy sources."), ("gpt", "Solar power and wind power.")), "WebInstructSub_axolotl", 4.12),
        (conv(("human", "How many legs does a spider have?"), ("gpt", "Eight.")), "infini-instruct-top-500k", 4.50),
        (conv(("human", "Translate 'thank you' into Japanese."), ("gpt", "ありがとう (arigatou).")), "infini-instruct-top-500k", 4.70),
    ]
    table = pa.table({
        "conversations": pa.array([r[0] for r in rows], type=pa.list_(pa.struct([("from", pa.string()), ("value", pa.string())]))),
        "source": [r[1] for r in rows],
        "score": pa.array([r[2] for r in rows], type=pa.float64()),
    })
    out = HERE / "finetome" / "data" / "train-00000-of-00001.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out, row_group_size=8)


# ------------------------------------------------------------------------------------------------
# Moses parallel text: corpus.en / corpus.zh_tw / corpus.ja, and an OPUS-style en-ja zip
# ------------------------------------------------------------------------------------------------
PARALLEL = [
    ("Good morning.", "早安。", "おはようございます。"),
    ("Thank you very much.", "非常感謝你。", "どうもありがとうございます。"),
    ("Where is the train station?", "火車站在哪裡？", "駅はどこですか。"),
    ("I would like a cup of coffee.", "我想要一杯咖啡。", "コーヒーを一杯ください。"),
    ("How much is this?", "這個多少錢？", "これはいくらですか。"),
    ("The weather is nice today.", "今天天氣很好。", "今日はいい天気です。"),
    ("Please speak more slowly.", "請說慢一點。", "もう少しゆっくり話してください。"),
    ("I do not understand.", "我不明白。", "わかりません。"),
    ("Can you help me?", "你可以幫我嗎？", "手伝ってもらえますか。"),
    ("My name is Lin.", "我叫林。", "私の名前は林です。"),
    ("I am a student.", "我是學生。", "私は学生です。"),
    ("The library opens at nine.", "圖書館九點開門。", "図書館は九時に開きます。"),
    ("This book is very interesting.", "這本書很有趣。", "この本はとても面白いです。"),
    ("I live in Taipei.", "我住在台北。", "私は台北に住んでいます。"),
    ("Let's meet tomorrow afternoon.", "我們明天下午見面吧。", "明日の午後に会いましょう。"),
    ("The hospital is next to the park.", "醫院在公園旁邊。", "病院は公園の隣にあります。"),
    ("Please turn left at the corner.", "請在轉角左轉。", "角を左に曲がってください。"),
    ("I have a headache.", "我頭痛。", "頭が痛いです。"),
    ("The meeting has been postponed.", "會議已經延期了。", "会議は延期されました。"),
    ("Tom &amp; Mary are friends.", "湯姆和瑪麗是朋友。", "トムとメアリーは友達です。"),
    ("Good morning.", "早安。", "おはようございます。"),
    ("", "這一行的英文是空的。", "この行の英語は空です。"),
    ("Water boils at one hundred degrees Celsius.", "水在攝氏一百度沸騰。", "水は摂氏百度で沸騰します。"),
    ("She plays the piano every evening.", "她每天晚上彈鋼琴。", "彼女は毎晩ピアノを弾きます。"),
]

OPUS_EN_JA = [
    ("See you later.", "またね。"),
    ("It is raining.", "雨が降っています。"),
    ("The shop is closed on Mondays.", "その店は月曜日が休みです。"),
    ("I lost my umbrella.", "傘をなくしました。"),
    ("Dinner is ready.", "夕食ができました。"),
    ("How long does it take?", "どのくらいかかりますか。"),
]


def moses() -> None:
    folder = HERE / "moses"
    folder.mkdir(parents=True, exist_ok=True)
    for i, suffix in enumerate(("en", "zh_tw", "ja")):
        (folder / f"corpus.{suffix}").write_text("".join(row[i] + "\n" for row in PARALLEL), encoding="utf-8")
    opus = HERE / "opus"
    opus.mkdir(parents=True, exist_ok=True)
    zpath = opus / "en-ja.txt.zip"
    with zipfile.ZipFile(zpath, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in (
            ("Demo.en-ja.en", "".join(en + "\n" for en, _ in OPUS_EN_JA)),
            ("Demo.en-ja.ja", "".join(ja + "\n" for _, ja in OPUS_EN_JA)),
            ("Demo.en-ja.ids", "".join(f"demo.xml\tdemo.xml\t{i}\t{i}\n" for i in range(1, len(OPUS_EN_JA) + 1))),
            ("README", "Demo corpus written for qwen_factory_kit's examples (OPUS layout).\n"),
        ):
            info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
            zf.writestr(info, data)


# ------------------------------------------------------------------------------------------------
# Preference pairs for ORPO/DPO
# ------------------------------------------------------------------------------------------------
PREFERENCE = [
    ("How should I store fresh herbs?", "Wrap soft herbs in a damp paper towel, put them in a bag and keep them in the fridge; keep basil at room temperature in water.", "Just leave them anywhere."),
    ("Is it safe to look at the sun?", "No. Looking directly at the sun can permanently damage your eyes; use certified eclipse glasses.", "Yes, for a few minutes it is fine."),
    ("What is 7 * 8?", "<think>\n7 * 8 = 56\n</think>\n\n56.", "54."),
    ("Suggest a name for a grey cat.", "How about Pebble, Smoky or Ash?", "Dog."),
    ("How do I make a strong password?", "Use a long passphrase of several random words, never reuse it, and keep it in a password manager.", "Use your birthday so you remember it."),
    ("Translate 'good night' into French.", "Bonne nuit.", "Bonjour."),
]


def preference() -> None:
    out = HERE / "preference" / "pairs.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as fh:
        for prompt, chosen, rejected in PREFERENCE:
            fh.write(json.dumps({"prompt": prompt, "chosen": chosen, "rejected": rejected}, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    medical()
    finetome()
    moses()
    preference()
    print(f"examples written under {HERE}")
