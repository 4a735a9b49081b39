/*
 * tables.c — the synthetic population's parameters and code lists, as data.
 *
 * Every number and code here is documented in docs/synth.md with its
 * source. Codes are real codes from the published terminologies:
 *   SNOMED CT (international release and the UK clinical/drug extensions),
 *   dm+d virtual therapeutic moieties (VTM) where noted — taken from the
 *     code lists published by the University of Exeter's diabetes research
 *     group (github.com/Exeter-Diabetes/sde-sw-framework, code_lists/
 *     medications, derived from NHSBSA dm+d release 1.2.0),
 *   ICD-10 (WHO 2016 / UK 5th edition), OPCS-4 (OPCS-4.10),
 *   LOINC (hospital results), NHS Data Dictionary code sets (ethnic
 *     category, treatment function codes, admission method).
 * Prevalences and rates are approximate published figures (see the docs);
 * effect sizes (log rate ratios) are modelling assumptions chosen to be
 * plausible, and are labelled so.
 *
 * Invariant: arrays indexed by an enum have exactly that enum's order.
 */
#include "synth_int.h"

const char *const setting_code[N_SETTINGS] = {"primary-care", "acute", "community", "social-care", "mental-health"};
const char *const setting_display[N_SETTINGS] = {"Primary care", "Acute hospital", "Community health services",
                                                 "Adult social care", "Mental health services"};

/* London age structure, percent of residents: ONS Census 2021 (TS007A, age
 * by five-year band, London region), rounded; share female by band from the
 * same release, rounded. The top band is 90-100. */
const age_band age_bands[] = {
    {0, 4, 6.3, 0.49},    {5, 9, 6.2, 0.49},    {10, 14, 6.0, 0.49},  {15, 19, 5.5, 0.49},
    {20, 24, 6.4, 0.51},  {25, 29, 8.4, 0.52},  {30, 34, 9.3, 0.51},  {35, 39, 8.6, 0.50},
    {40, 44, 7.5, 0.50},  {45, 49, 6.6, 0.50},  {50, 54, 6.3, 0.50},  {55, 59, 5.7, 0.50},
    {60, 64, 4.7, 0.51},  {65, 69, 3.6, 0.52},  {70, 74, 3.1, 0.53},  {75, 79, 2.3, 0.55},
    {80, 84, 1.6, 0.58},  {85, 89, 1.0, 0.61},  {90, 100, 0.6, 0.68},
};
const int n_age_bands = (int)(sizeof age_bands / sizeof age_bands[0]);

/* NHS Data Dictionary "Ethnic Category" codes; shares: ONS Census 2021
 * (TS021, London region), rounded, with Z (not stated) taken from the
 * ethnic groups pro rata. */
const ethnicity_def ethnicities[] = {
    {"A", "British", ETH_WHITE, 36.8},
    {"B", "Irish", ETH_WHITE, 1.8},
    {"C", "Any other White background", ETH_WHITE, 14.7},
    {"D", "White and Black Caribbean", ETH_MIXED, 1.5},
    {"E", "White and Black African", ETH_MIXED, 0.9},
    {"F", "White and Asian", ETH_MIXED, 1.5},
    {"G", "Any other mixed background", ETH_MIXED, 1.8},
    {"H", "Indian", ETH_ASIAN, 7.5},
    {"J", "Pakistani", ETH_ASIAN, 3.3},
    {"K", "Bangladeshi", ETH_ASIAN, 3.7},
    {"L", "Any other Asian background", ETH_ASIAN, 4.6},
    {"M", "Caribbean", ETH_BLACK, 3.9},
    {"N", "African", ETH_BLACK, 7.9},
    {"P", "Any other Black background", ETH_BLACK, 1.7},
    {"R", "Chinese", ETH_OTHER, 1.7},
    {"S", "Any other ethnic group", ETH_OTHER, 6.3},
};
const int n_ethnicities = (int)(sizeof ethnicities / sizeof ethnicities[0]);

/* Long-term conditions. target: register prevalence as a share of the
 * whole registered list, approximately the London figures of the Quality
 * and Outcomes Framework 2022-23 (NHS Digital) — diabetes ~7% per the
 * issue; osteoarthritis, hypothyroidism and type 1 diabetes are not QOF
 * registers and use published UK estimates (docs/synth.md). Age,
 * deprivation, ethnicity and sex effects are log-odds (modelling
 * assumptions in the direction and rough size the literature reports);
 * the intercept is calibrated at run time so the target is met. */
const condition_def conditions[N_CONDITIONS] = {
    /*             name, snomed, display, icd10, icd10 display, target, min_age, age, peak, dep,
     *             eth{W,A,B,M,O}, female, latent, nel, ae, op, death, source */
    [C_T2DM] = {"type 2 diabetes", "44054006", "Diabetes mellitus type 2", "E11.9",
                "Type 2 diabetes mellitus without complications", 0.063, 18, 0.55, 75, 0.07,
                {0, 0.9, 0.6, 0.3, 0.3}, -0.25, 0.5, 0.35, 0.2, 0.3, 0.3, "QOF 2022-23 London (DM017)"},
    [C_T1DM] = {"type 1 diabetes", "46635009", "Diabetes mellitus type 1", "E10.9",
                "Type 1 diabetes mellitus without complications", 0.004, 2, 0.05, 40, 0.0, {0, -0.5, -0.5, 0, -0.5},
                -0.1, 0.1, 0.7, 0.4, 0.5, 0.4, "Diabetes UK: ~8% of diabetes is type 1"},
    [C_HYPERTENSION] = {"hypertension", "38341003", "Hypertensive disorder, systemic arterial", "I10",
                        "Essential (primary) hypertension", 0.110, 18, 0.75, 85, 0.03, {0, 0.2, 0.45, 0.2, 0.1},
                        -0.1, 0.4, 0.1, 0.05, 0.1, 0.05, "QOF 2022-23 London (HYP001)"},
    [C_ASTHMA] = {"asthma", "195967001", "Asthma", "J45.9", "Asthma, unspecified", 0.050, 6, -0.05, 0, 0.04,
                  {0, -0.1, 0, 0.1, -0.2}, 0.15, 0.3, 0.25, 0.25, 0.1, 0.05, "QOF 2022-23 London (AST005)"},
    [C_COPD] = {"COPD", "13645005", "Chronic obstructive lung disease", "J44.9",
                "Chronic obstructive pulmonary disease, unspecified", 0.011, 35, 0.85, 85, 0.13,
                {0, -0.6, -0.7, -0.2, -0.4}, -0.1, 0.6, 0.85, 0.4, 0.3, 0.6, "QOF 2022-23 London (COPD015)"},
    [C_CHD] = {"coronary heart disease", "53741008", "Coronary arteriosclerosis", "I25.1",
               "Atherosclerotic heart disease", 0.020, 30, 0.9, 90, 0.06, {0, 0.4, -0.4, 0, 0}, -0.7, 0.6,
               0.35, 0.3, 0.4, 0.3, "QOF 2022-23 London (CHD001)"},
    [C_HF] = {"heart failure", "84114007", "Heart failure", "I50.9", "Heart failure, unspecified", 0.006, 35,
              1.05, 95, 0.06, {0, 0.1, 0.1, 0, 0}, -0.4, 0.7, 0.85, 0.4, 0.4, 0.9, "QOF 2022-23 London (HF001)"},
    [C_AF] = {"atrial fibrillation", "49436004", "Atrial fibrillation", "I48.9",
              "Atrial fibrillation and atrial flutter, unspecified", 0.012, 30, 1.15, 95, 0.0,
              {0, -0.7, -0.7, -0.3, -0.4}, -0.35, 0.4, 0.3, 0.2, 0.4, 0.3, "QOF 2022-23 London (AF001)"},
    [C_STROKE] = {"stroke or TIA", "230690007", "Cerebrovascular accident", "I63.9",
                  "Cerebral infarction, unspecified", 0.011, 30, 0.9, 95, 0.05, {0, 0.1, 0.3, 0, 0}, -0.1, 0.5,
                  0.4, 0.2, 0.3, 0.45, "QOF 2022-23 London (STIA001)"},
    [C_CKD] = {"chronic kidney disease (stages 3-5)", "709044004", "Chronic kidney disease", "N18.3",
               "Chronic kidney disease, stage 3", 0.022, 18, 1.0, 95, 0.04, {0, 0.2, 0.3, 0, 0}, 0.15, 0.6, 0.4,
               0.2, 0.3, 0.4, "QOF 2022-23 London (CKD005)"},
    [C_DEMENTIA] = {"dementia", "52448006", "Dementia", "F03", "Unspecified dementia", 0.005, 50, 1.55, 100, 0.03,
                    {0, -0.2, 0.1, 0, 0}, 0.2, 0.3, 0.6, 0.5, 0.0, 0.9, "QOF 2022-23 London (DEM001)"},
    [C_DEPRESSION] = {"depression", "35489007", "Depressive disorder", "F32.9", "Depressive episode, unspecified",
                      0.070, 18, 0.05, 60, 0.06, {0, -0.35, -0.35, 0.1, -0.2}, 0.55, 0.4, 0.25, 0.3, 0.05, 0.1,
                      "QOF 2022-23 London (DEP003, 18+)"},
    [C_SMI] = {"severe mental illness", "58214004", "Schizophrenia", "F20.9", "Schizophrenia, unspecified", 0.011,
               18, 0.1, 50, 0.09, {0, 0.1, 0.75, 0.3, 0.2}, -0.2, 0.3, 0.5, 0.5, 0.0, 0.5,
               "QOF 2022-23 London (MH001)"},
    [C_CANCER] = {"cancer", "363346000", "Malignant neoplastic disease", "C80.9", "Malignant neoplasm, unspecified",
                  0.025, 18, 0.75, 90, -0.01, {0, -0.4, -0.2, -0.1, -0.2}, 0.1, 0.3, 0.6, 0.2, 0.6, 0.8,
                  "QOF 2022-23 London (CAN001)"},
    [C_HYPOTHYROID] = {"hypothyroidism", "40930008", "Hypothyroidism", "E03.9", "Hypothyroidism, unspecified",
                       0.025, 18, 0.5, 80, 0.02, {0, -0.2, -0.4, 0, 0}, 1.5, 0.2, 0.05, 0.0, 0.05, 0.0,
                       "UK primary care estimates (~3%)"},
    [C_OSTEOARTHRITIS] = {"osteoarthritis", "396275006", "Osteoarthritis", "M19.9", "Arthrosis, unspecified",
                          0.050, 40, 0.8, 90, 0.03, {0, -0.1, 0, 0, 0}, 0.4, 0.3, 0.1, 0.1, 0.3, 0.0,
                          "Versus Arthritis (recorded OA)"},
    [C_EPILEPSY] = {"epilepsy", "84757009", "Epilepsy", "G40.9", "Epilepsy, unspecified", 0.006, 18, 0.0, 0, 0.05,
                    {0, 0, 0, 0, 0}, 0, 0.2, 0.4, 0.4, 0.2, 0.3, "QOF 2022-23 London (EP001, 18+)"},
    [C_LD] = {"learning disability", "110359009", "Intellectual disability", "F79",
              "Unspecified mental retardation", 0.004, 0, -0.1, 0, 0.05, {0, 0, 0, 0, 0}, -0.3, 0.2, 0.4, 0.3, 0.1,
              0.6, "QOF 2022-23 London (LD004)"},
};

/* Observations recorded in primary care (care processes of the National
 * Diabetes Audit and QOF). SNOMED CT UK clinical extension concepts. */
const obs_def obs_defs[N_OBS_KINDS] = {
    [OBS_HBA1C] = {"999791000000106", "Haemoglobin A1c level - IFCC standardised", "mmol/mol", "mmol/mol",
                   "laboratory"},
    [OBS_SYSTOLIC] = {"72313002", "Systolic arterial pressure", "mmHg", "mm[Hg]", "vital-signs"},
    [OBS_DIASTOLIC] = {"1091811000000102", "Diastolic arterial pressure", "mmHg", "mm[Hg]", "vital-signs"},
    [OBS_CHOLESTEROL] = {"1005671000000105", "Serum cholesterol level", "mmol/L", "mmol/L", "laboratory"},
    [OBS_CREATININE] = {"1000731000000107", "Serum creatinine level", "micromol/L", "umol/L", "laboratory"},
    [OBS_EGFR] = {"1011481000000105", "eGFR using creatinine (CKD-EPI) per 1.73 square metres",
                  "mL/min/1.73m2", "mL/min/{1.73_m2}", "laboratory"},
    [OBS_ACR] = {"1023491000000104", "Urine albumin:creatinine ratio", "mg/mmol", "mg/mmol", "laboratory"},
    [OBS_BMI] = {"60621009", "Body mass index", "kg/m2", "kg/m2", "vital-signs"},
    [OBS_SMOKING] = {NULL, NULL, NULL, NULL, "social-history"}, /* coded by smoking_codes */
    [OBS_FOOT] = {"401191002", "Diabetic foot examination", NULL, NULL, "exam"},
};
const code_def smoking_codes[3] = {
    {"77176002", "Smoker"}, {"8517006", "Ex-smoker"}, {"266919005", "Never smoked tobacco"}};

/* Medicines. dm+d VTM codes (Exeter-Diabetes code lists, from NHSBSA dm+d)
 * where marked VTM; otherwise SNOMED CT substance concepts (marked SUB) —
 * both in the SNOMED CT code system, as UK Core expects. share: of people
 * with the condition who take it. */
const drug_def drugs[] = {
    {"776713006", "Metformin", C_T2DM, 0.80},          /* VTM */
    {"776108001", "Gliclazide", C_T2DM, 0.25},         /* VTM */
    {"777541003", "Sitagliptin", C_T2DM, 0.15},        /* VTM */
    {"775752008", "Empagliflozin", C_T2DM, 0.20},      /* VTM */
    {"67866001", "Insulin", C_T1DM, 1.00},             /* SUB */
    {"775447002", "Dapagliflozin", C_HF, 0.30},        /* VTM */
    {"774557006", "Amlodipine", C_HYPERTENSION, 0.45}, /* VTM */
    {"777395009", "Ramipril", C_HYPERTENSION, 0.35},   /* VTM */
    {"776550005", "Lisinopril", C_HYPERTENSION, 0.08}, /* VTM */
    {"774685003", "Atenolol", C_HYPERTENSION, 0.05},   /* VTM */
    {"777395009", "Ramipril", C_HF, 0.60},             /* VTM */
    {"774880006", "Bisoprolol", C_HF, 0.70},           /* VTM */
    {"387475002", "Furosemide", C_HF, 0.70},           /* SUB */
    {"774880006", "Bisoprolol", C_AF, 0.50},           /* VTM */
    {"698090000", "Apixaban", C_AF, 0.60},             /* SUB */
    {"373444002", "Atorvastatin", C_CHD, 0.80},        /* SUB */
    {"387458008", "Aspirin", C_CHD, 0.60},             /* SUB */
    {"774880006", "Bisoprolol", C_CHD, 0.40},          /* VTM */
    {"373444002", "Atorvastatin", C_T2DM, 0.60},       /* SUB */
    {"373444002", "Atorvastatin", C_STROKE, 0.70},     /* SUB */
    {"777395009", "Ramipril", C_CKD, 0.30},            /* VTM */
    {"372897005", "Salbutamol", C_ASTHMA, 0.90},       /* SUB */
    {"372897005", "Salbutamol", C_COPD, 0.85},         /* SUB */
    {"372594008", "Sertraline", C_DEPRESSION, 0.40},   /* SUB */
    {"372596005", "Citalopram", C_DEPRESSION, 0.25},   /* SUB */
    {"386849001", "Olanzapine", C_SMI, 0.45},          /* SUB */
    {"373444002", "Atorvastatin", C_HYPERTENSION, 0.35}, /* SUB */
    {"373444002", "Atorvastatin", C_CKD, 0.45},        /* SUB */
    {"387458008", "Aspirin", C_STROKE, 0.30},          /* SUB */
    {"387137007", "Omeprazole", C_OSTEOARTHRITIS, 0.35}, /* SUB */
    {"387137007", "Omeprazole", C_CHD, 0.35},          /* SUB */
    {"387137007", "Omeprazole", C_T2DM, 0.20},         /* SUB */
    {"387137007", "Omeprazole", C_HYPERTENSION, 0.15}, /* SUB */
    {"387475002", "Furosemide", C_CKD, 0.15},          /* SUB */
    {"372897005", "Salbutamol", C_HF, 0.05},           /* SUB */
    {"387517004", "Paracetamol", C_OSTEOARTHRITIS, 0.60}, /* SUB */
};
const int n_drugs = (int)(sizeof drugs / sizeof drugs[0]);

/* Frailty deficits in the spirit of the electronic Frailty Index (Clegg et
 * al., Age Ageing 2016): findings coded in primary care, SNOMED CT.
 * rate_at_80: modelling assumption, doubling every ~8 years of age. */
const deficit_def deficits[] = {
    {"161898004", "Falls", 0.20},
    {"165232002", "Urinary incontinence", 0.15},
    {"386807006", "Memory impairment", 0.10},
    {"15188001", "Hearing loss", 0.25},
    {"397540003", "Visual impairment", 0.12},
    {"82971005", "Impaired mobility", 0.18},
    {"160689007", "Housebound", 0.08},
    {"404640003", "Dizziness", 0.10},
    {"400047006", "Peripheral vascular disease", 0.05},
    {"105529008", "Lives alone", 0.30},
    {"89362005", "Weight loss", 0.05},
    {"64859006", "Osteoporosis", 0.12},
};
const int n_deficits = (int)(sizeof deficits / sizeof deficits[0]);

/* Primary diagnoses of non-elective admissions (ICD-10). weight: relative
 * frequency (modelling assumption shaped on HES top emergency diagnoses);
 * condition-specific reasons apply only to people with the condition;
 * frail: weight grows with frailty deficits. los_median in days. */
const admission_reason nel_reasons[] = {
    {"J18.9", "Pneumonia, unspecified", -1, 8, 1, 5},
    {"N39.0", "Urinary tract infection, site not specified", -1, 6, 1, 4},
    {"R07.4", "Chest pain, unspecified", -1, 8, 0, 1},
    {"R10.4", "Other and unspecified abdominal pain", -1, 7, 0, 1},
    {"L03.9", "Cellulitis, unspecified", -1, 4, 0, 3},
    {"A41.9", "Sepsis, unspecified", -1, 3, 1, 7},
    {"R55", "Syncope and collapse", -1, 4, 1, 2},
    {"S72.0", "Fracture of neck of femur", -1, 1, 3, 14},
    {"F05.9", "Delirium, unspecified", -1, 1, 3, 8},
    {"R06.0", "Dyspnoea", -1, 3, 0, 1},
    {"K59.0", "Constipation", -1, 2, 1, 2},
    {"N17.9", "Acute renal failure, unspecified", C_CKD, 8, 1, 6},
    {"I50.9", "Heart failure, unspecified", C_HF, 30, 0, 7},
    {"J44.1", "Chronic obstructive pulmonary disease with acute exacerbation, unspecified", C_COPD, 30, 0, 5},
    {"J45.9", "Asthma, unspecified", C_ASTHMA, 6, 0, 2},
    {"E16.2", "Hypoglycaemia, unspecified", C_T1DM, 25, 0, 1},
    {"E10.1", "Type 1 diabetes mellitus with ketoacidosis", C_T1DM, 15, 0, 3},
    {"E11.6", "Type 2 diabetes mellitus with other specified complications", C_T2DM, 4, 0, 4},
    {"I48.9", "Atrial fibrillation and atrial flutter, unspecified", C_AF, 12, 0, 3},
    {"I21.9", "Acute myocardial infarction, unspecified", C_CHD, 10, 0, 5},
    {"I63.9", "Cerebral infarction, unspecified", C_STROKE, 8, 0, 10},
    {"G40.9", "Epilepsy, unspecified", C_EPILEPSY, 20, 0, 2},
    {"F20.9", "Schizophrenia, unspecified", C_SMI, 6, 0, 12},
    {"C80.9", "Malignant neoplasm, unspecified", C_CANCER, 15, 0, 7},
    {"F03", "Unspecified dementia", C_DEMENTIA, 10, 1, 12},
};
const int n_nel_reasons = (int)(sizeof nel_reasons / sizeof nel_reasons[0]);

/* Elective procedures (OPCS-4.10) with their usual diagnosis (ICD-10). */
const elective_def electives[] = {
    {"C71.2", "Phakoemulsification of lens", "H25.9", "Senile cataract, unspecified", 55, 1, 10, 4},
    {"W37.1", "Primary total prosthetic replacement of hip joint using cement", "M16.9", "Coxarthrosis, unspecified",
     50, 0, 3, 2},
    {"W40.1", "Primary total prosthetic replacement of knee joint using cement", "M17.9",
     "Gonarthrosis, unspecified", 50, 0, 3, 2},
    {"H22.9", "Unspecified diagnostic endoscopic examination of colon", "K57.3",
     "Diverticular disease of large intestine without perforation or abscess", 40, 1, 8, 6},
    {"G45.9", "Unspecified diagnostic fibreoptic endoscopic examination of upper gastrointestinal tract", "K21.9",
     "Gastro-oesophageal reflux disease without oesophagitis", 30, 1, 8, 6},
    {"T20.9", "Unspecified primary repair of inguinal hernia", "K40.9",
     "Unilateral or unspecified inguinal hernia, without obstruction or gangrene", 20, 1, 4, 0},
    {"J18.9", "Unspecified excision of gall bladder", "K80.2", "Calculus of gallbladder without cholecystitis", 25,
     0, 3, 0},
    {"M45.9", "Unspecified diagnostic endoscopic examination of bladder", "R31", "Unspecified haematuria", 40, 1, 4,
     1},
};
const int n_electives = (int)(sizeof electives / sizeof electives[0]);

/* Outpatient specialties: NHS Data Dictionary treatment function codes. */
const specialty_def specialties[] = {
    {"100", "General Surgery Service", -1, 8},       {"101", "Urology Service", -1, 4},
    {"110", "Trauma and Orthopaedic Service", -1, 10}, {"130", "Ophthalmology Service", -1, 8},
    {"300", "General Internal Medicine Service", -1, 5}, {"301", "Gastroenterology Service", -1, 5},
    {"307", "Diabetes Service", C_T2DM, 25},         {"307", "Diabetes Service", C_T1DM, 60},
    {"320", "Cardiology Service", C_CHD, 20},        {"320", "Cardiology Service", C_HF, 30},
    {"320", "Cardiology Service", C_AF, 15},         {"330", "Dermatology Service", -1, 6},
    {"340", "Respiratory Physiology Service", C_COPD, 20}, {"361", "Nephrology Service", C_CKD, 15},
    {"370", "Medical Oncology Service", C_CANCER, 40}, {"400", "Neurology Service", C_EPILEPSY, 20},
    {"410", "Rheumatology Service", C_OSTEOARTHRITIS, 6}, {"430", "Elderly Medicine Service", C_DEMENTIA, 15},
    {"502", "Gynaecology Service", -1, 5},
};
const int n_specialties = (int)(sizeof specialties / sizeof specialties[0]);

/* Hospital laboratory results (ORU^R01), LOINC; UK units and adult
 * reference ranges. The value distribution is that of acutely ill
 * inpatients (modelling assumption). */
const lab_def lab_tests[] = {
    {"2951-2", "Sodium [Moles/volume] in Serum or Plasma", "mmol/L", 133, 146, 138, 4, 0},
    {"2823-3", "Potassium [Moles/volume] in Serum or Plasma", "mmol/L", 3.5, 5.3, 4.3, 0.5, 1},
    {"14682-9", "Creatinine [Moles/volume] in Serum or Plasma", "umol/L", 59, 104, 95, 35, 0},
    {"718-7", "Hemoglobin [Mass/volume] in Blood", "g/L", 130, 180, 125, 18, 0},
    {"6690-2", "Leukocytes [#/volume] in Blood by Automated count", "10*9/L", 4.0, 11.0, 9.5, 3.5, 1},
    {"1988-5", "C reactive protein [Mass/volume] in Serum or Plasma", "mg/L", 0, 5, 35, 45, 0},
};
const int n_lab_tests = (int)(sizeof lab_tests / sizeof lab_tests[0]);

/* Events per 1,000 person-years the hazard model is calibrated to. */
const hazard_def hazards[N_HAZARDS] = {
    [HZ_AE] = {"A&E attendances (type 1, all)", 300,
               "NHS England A&E Attendances and Emergency Admissions 2019-20: ~16M type 1 attendances / 56M"},
    [HZ_NEL] = {"non-elective admissions", 85,
                "HES Admitted Patient Care 2019-20 (England ~110/1,000; London lower, younger population)"},
    [HZ_ELECTIVE] = {"elective admissions (ordinary and day case)", 120, "HES Admitted Patient Care 2019-20"},
    [HZ_OUTPATIENT] = {"outpatient attendances", 1000,
                       "HES Outpatients 2019-20 (~1,800/1,000 with follow-ups; thinned for volume)"},
    [HZ_COMMUNITY] = {"community nursing contacts", 600, "Community Services Data Set 2022-23 (adult nursing, thinned)"},
    [HZ_SOCIAL] = {"new social care packages", 8, "NHS Digital Adult Social Care Activity and Finance 2022-23"},
    [HZ_CARE_HOME] = {"care home admissions", 2.5, "ASC-FR 2022-23 permanent admissions (65+: ~560/100,000)"},
    [HZ_MH] = {"mental health contacts", 250, "Mental Health Services Data Set 2022-23 (~2.5% in contact)"},
    [HZ_GP] = {"GP consultations in the extract", 1000,
               "GP Patient Data (~4-5/person-year); thinned to 1/person-year for volume"},
    [HZ_DEATH] = {"deaths", 5.5, "ONS deaths registered 2019, London: ~49,000 / 8.9M residents"},
};

/* ---- names and places ------------------------------------------------------ */
static const char *const fam_white[] = {
    "Smith", "Jones", "Williams", "Brown", "Taylor", "Davies", "Evans", "Wilson", "Thomas", "Johnson", "Roberts",
    "Walker", "Wright", "Robinson", "Thompson", "White", "Hughes", "Edwards", "Green", "Hall", "Wood", "Harris",
    "Lewis", "Martin", "Jackson", "Clarke", "Clark", "Turner", "Hill", "Scott", "Cooper", "Morris", "Ward",
    "Moore", "King", "Watson", "Baker", "Harrison", "Morgan", "Patterson", "Young", "Allen", "Mitchell", "James",
    "Anderson", "Phillips", "Lee", "Bell", "Parker", "Davis", "Murphy", "O'Brien", "Kelly", "Campbell", "Stewart",
    "Nowak", "Kowalski", "Wisniewski", "Silva", "Santos", "Ferreira", "Rossi", "Popescu", "Horvath", "MacDonald",
    "Fitzgerald", "Gallagher", "Cohen", "Levy", "Papadopoulos"};
static const char *const male_white[] = {"Oliver", "Jack", "Harry", "George", "Noah", "James", "David", "John",
                                         "Michael", "Peter", "William", "Thomas", "Daniel", "Samuel", "Joseph",
                                         "Arthur", "Robert", "Richard", "Christopher", "Anthony", "Edward",
                                         "Alexander", "Tomasz", "Piotr", "Luca", "Patrick", "Stephen", "Paul",
                                         "Mark", "Andrew"};
static const char *const female_white[] = {"Olivia", "Amelia", "Isla", "Ava", "Mary", "Margaret", "Susan", "Sarah",
                                           "Emma", "Grace", "Chloe", "Anna", "Patricia", "Elizabeth", "Joan",
                                           "Zofia", "Katherine", "Jennifer", "Helen", "Rebecca", "Charlotte",
                                           "Sophie", "Lucy", "Jessica", "Victoria", "Maria", "Agnieszka", "Claire",
                                           "Rachel", "Dorothy"};
static const char *const fam_asian[] = {"Patel", "Khan", "Ahmed", "Ali", "Begum", "Hussain", "Shah", "Singh", "Kaur",
                                        "Sharma", "Rahman", "Islam", "Uddin", "Miah", "Chowdhury", "Iqbal", "Akhtar",
                                        "Malik", "Mahmood", "Gupta", "Kumar", "Desai", "Mehta", "Joshi", "Bibi",
                                        "Hossain", "Sandhu", "Gill", "Dhillon", "Nair", "Pillai", "Raza",
                                        "Siddiqui", "Qureshi", "Javed"};
static const char *const male_asian[] = {"Mohammed", "Muhammad", "Ahmed", "Ravi", "Arjun", "Imran", "Abdul",
                                         "Rajesh", "Sanjay", "Amir", "Hassan", "Bilal", "Omar", "Yusuf", "Zain",
                                         "Aarav", "Vikram", "Harpreet", "Gurpreet", "Rohan", "Tariq", "Faisal"};
static const char *const female_asian[] = {"Fatima", "Aisha", "Priya", "Ayesha", "Nadia", "Sana", "Zara", "Anjali",
                                           "Sunita", "Shabana", "Rubina", "Nasreen", "Maryam", "Amina", "Deepa",
                                           "Kavita", "Simran", "Jaspreet", "Hina", "Farzana", "Layla", "Noor"};
static const char *const fam_black[] = {"Okafor", "Mensah", "Adeyemi", "Okonkwo", "Osei", "Boateng", "Asante",
                                        "Mohamed", "Abdi", "Hassan", "Williams", "Campbell", "Brown", "Francis",
                                        "Thomas", "Johnson", "Grant", "Clarke", "Adebayo", "Oluwole", "Nwosu",
                                        "Owusu", "Kamara", "Diallo", "Bangura", "Yusuf", "Ibrahim", "Warsame",
                                        "Edwards", "Richards"};
static const char *const male_black[] = {"Kwame", "Kofi", "Chinedu", "Emeka", "Oluwaseun", "Abdi", "Mohamed",
                                         "Tyrone", "Marcus", "Andre", "Daniel", "Samuel", "David", "Joshua",
                                         "Ibrahim", "Tunde", "Femi", "Kwabena", "Delroy", "Winston"};
static const char *const female_black[] = {"Amara", "Chiamaka", "Ngozi", "Abena", "Ama", "Fatuma", "Hodan",
                                           "Grace", "Blessing", "Precious", "Faith", "Marcia", "Beverley",
                                           "Simone", "Jasmine", "Funmilayo", "Adaeze", "Ifeoma", "Yetunde",
                                           "Hawa"};
static const char *const fam_other[] = {"Wang", "Li", "Zhang", "Chen", "Liu", "Nguyen", "Tran", "Kim", "Park",
                                        "Ahmadi", "Hosseini", "Karimi", "Haddad", "Khalil", "Saleh", "Yilmaz",
                                        "Kaya", "Demir", "Garcia", "Rodriguez", "Martinez", "Lopez", "Santos",
                                        "Tanaka", "Sato", "Cruz", "Reyes", "Mansour", "Aziz", "Farah"};
static const char *const male_other[] = {"Wei", "Jun", "Minh", "Ali", "Reza", "Omar", "Mehmet", "Carlos", "Jose",
                                         "Hiroshi", "Daniel", "Adam", "Karim", "Sami", "Luis", "Jin", "Hao",
                                         "Emre"};
static const char *const female_other[] = {"Mei", "Ling", "Hana", "Yasmin", "Leila", "Elif", "Sofia", "Lucia",
                                           "Yuki", "Mariam", "Rania", "Ana", "Camila", "Jia", "Xin", "Dina", "Nour",
                                           "Carmen"};
#define POOL(f, m, w)                                                                                                  \
    {f, (int)(sizeof f / sizeof f[0]), m, (int)(sizeof m / sizeof m[0]), w, (int)(sizeof w / sizeof w[0])}
const name_pool name_pools[5] = {
    [ETH_WHITE] = POOL(fam_white, male_white, female_white),
    [ETH_ASIAN] = POOL(fam_asian, male_asian, female_asian),
    [ETH_BLACK] = POOL(fam_black, male_black, female_black),
    [ETH_MIXED] = POOL(fam_white, male_black, female_white),
    [ETH_OTHER] = POOL(fam_other, male_other, female_other),
};

const char *const streets[] = {
    "High Street", "Church Road", "Station Road", "Uxbridge Road", "Harrow Road", "King Street", "Goldhawk Road",
    "Edgware Road", "Park Lane", "Queens Road", "Victoria Road", "Kingsland Avenue", "Westbourne Grove",
    "Ladbroke Grove", "Shepherds Bush Road", "Fulham Palace Road", "Askew Road", "Chiswick High Road",
    "Acton Lane", "The Broadway", "Northfield Avenue", "Lady Margaret Road", "Greenford Road", "Kilburn High Road",
    "Willesden Lane", "Neasden Lane", "Ealing Road", "Wembley Hill Road", "Elgin Avenue", "Portobello Road",
    "Lillie Road", "North End Road", "Blythe Road", "Dawes Road", "Walm Lane", "Chamberlayne Road",
    "Bravington Road", "Lancaster Road", "Oxford Gardens", "Cromwell Road"};
const int n_streets = (int)(sizeof streets / sizeof streets[0]);

/* Postcode districts of the area and the council whose social care serves
 * them (councils 0..4; see model.c for their names). */
const district_def districts[] = {
    {"W2", 0},   {"W9", 0},   {"NW8", 0},  {"W1", 0},  {"W8", 1},  {"W10", 1}, {"W11", 1}, {"SW5", 1},
    {"SW10", 1}, {"W6", 2},   {"W12", 2},  {"W14", 2}, {"SW6", 2}, {"NW10", 3}, {"NW2", 3}, {"HA0", 3},
    {"HA9", 3},  {"NW6", 3},  {"W3", 4},   {"W5", 4},  {"W7", 4},  {"W13", 4}, {"UB1", 4}, {"UB2", 4},
    {"UB6", 4},
};
const int n_districts = (int)(sizeof districts / sizeof districts[0]);

const char *const nicknames[][2] = {
    {"William", "Bill"},     {"Robert", "Bob"},     {"Margaret", "Maggie"}, {"Elizabeth", "Liz"},
    {"Mohammed", "Mohamed"}, {"Muhammad", "Mohammad"}, {"James", "Jim"},   {"Michael", "Mike"},
    {"Katherine", "Kate"},   {"Susan", "Sue"},      {"Patricia", "Pat"},    {"Richard", "Rick"},
    {"Thomas", "Tom"},       {"Joseph", "Joe"},     {"Daniel", "Dan"},      {"Jennifer", "Jenny"},
    {"Christopher", "Chris"}, {"Anthony", "Tony"},  {"Edward", "Ted"},      {"Peter", "Pete"},
    {"Samuel", "Sam"},       {"Alexander", "Alex"}, {"Victoria", "Vicky"},  {"Rebecca", "Becky"},
    {"Dorothy", "Dot"},      {"Abdul", "Abdool"},   {"Ahmed", "Ahmad"},     {"Fatima", "Fatma"},
    {"Jessica", "Jess"},     {"Charlotte", "Lottie"}, {"Andrew", "Andy"},   {"Stephen", "Steve"},
};
const int n_nicknames = (int)(sizeof nicknames / sizeof nicknames[0]);

/* Local service codes of the provider extracts (documented per layout). */
const code_def social_services[] = {
    {"HC", "Home care"},      {"RB", "Reablement"}, {"DP", "Direct payment"}, {"DC", "Day care"},
    {"EQ", "Equipment and adaptations"}, {"MW", "Meals"}, {"RES", "Residential care"}, {"NUR", "Nursing care"},
};
const int n_social_services = (int)(sizeof social_services / sizeof social_services[0]);
const code_def community_services[] = {
    {"DN", "District nursing"},        {"CM", "Community matron"}, {"PT", "Community physiotherapy"},
    {"POD", "Podiatry"},               {"DSN", "Diabetes specialist nursing"},
    {"HFN", "Heart failure nursing"},  {"RESP", "Community respiratory team"},
    {"IC", "Intermediate care"},
};
const int n_community_services = (int)(sizeof community_services / sizeof community_services[0]);
const code_def mh_services[] = {
    {"CMHT", "Community mental health team"}, {"EIP", "Early intervention in psychosis"},
    {"TT", "NHS Talking Therapies"},          {"CRHT", "Crisis resolution and home treatment"},
    {"MEM", "Memory assessment service"},     {"LIA", "Liaison psychiatry"},
};
const int n_mh_services = (int)(sizeof mh_services / sizeof mh_services[0]);
